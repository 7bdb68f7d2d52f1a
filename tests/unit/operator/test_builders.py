"""The manifests a stage attempt becomes: what a cluster admin would check in `kubectl get -o yaml`."""

from __future__ import annotations

import yaml

from kuberlhf_operator.builders import build_child, build_config_map, build_pvc, build_pytorchjob
from kuberlhf_operator.names import LABEL_ATTEMPT, LABEL_JOB, LABEL_STAGE
from rlhfjob_factories import UID, make_job


def _pod(child, replica):
    key = "pytorchReplicaSpecs" if child["kind"] == "PyTorchJob" else "mpiReplicaSpecs"
    return child["spec"][key][replica]["template"]["spec"]


def test_pytorchjob_names_owner_and_labels():
    job = make_job(labels={"kueue.x-k8s.io/queue-name": "gpu-queue", "team": "x"})
    child = build_pytorchjob(job, "reward", 3, "cfg", "claim")
    meta = child["metadata"]
    assert (child["apiVersion"], child["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert (meta["name"], meta["namespace"]) == ("demo-reward-3", "team")
    assert meta["ownerReferences"] == [{"apiVersion": "kuberlhf.io/v1alpha1", "kind": "RLHFJob", "name": "demo",
                                        "uid": UID, "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"][LABEL_JOB] == "demo" and meta["labels"][LABEL_STAGE] == "reward"
    assert meta["labels"][LABEL_ATTEMPT] == "3"
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"  # Kueue queues each stage
    assert "team" not in meta["labels"]


def test_pytorchjob_runs_torchrun_over_the_trainer_step():
    job = make_job(spec={"stages": {"ppo": {"nodes": 3, "gpusPerNode": 8}}, "metricsPort": 9400})
    child = build_pytorchjob(job, "ppo", 1, "cfg", "claim")
    replicas = child["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    assert child["spec"]["nprocPerNode"] == "8"
    assert child["spec"]["runPolicy"]["backoffLimit"] == 0  # retries are new attempts, counted by the RLHFJob
    container = _pod(child, "Master")["containers"][0]
    assert container["name"] == "pytorch"  # the training-operator's webhook requires this name
    assert container["command"] == [
        "torchrun", "--nnodes=3", "--nproc-per-node=8", "-m", "kuberlhf_trainer",
        "step", "ppo", "--config", "/etc/kuberlhf/config.yaml", "--output_dir", "/mnt/kuberlhf/demo",
        "--metrics_port", "9400", "--metrics_linger_seconds", "30",
    ]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    # The trainer's failure report (or the log's tail) reaches the operator through the pod.
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBERLHF_TERMINATION_LOG"] == container["terminationMessagePath"] == "/dev/termination-log"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_a_restarted_stage_asks_the_trainer_to_overwrite():
    command = _pod(build_pytorchjob(make_job(), "sft", 2, "cfg", "claim", overwrite=True), "Master")
    assert command["containers"][0]["command"][-1] == "--overwrite"
    launcher = _pod(build_child(make_job(spec={"launcher": "mpijob"}), "sft", 2, "cfg", "claim", True), "Launcher")
    assert launcher["containers"][0]["command"][-1] == "--overwrite"


def test_single_node_stage_has_no_workers():
    child = build_pytorchjob(make_job(), "sft", 1, "cfg", "claim")
    assert set(child["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_training_pod_is_locked_down_and_mounts_what_it_needs():
    job = make_job(spec={
        "stages": {"sft": {"shmSize": "32Gi", "gpusPerNode": 0,
                           "resources": {"requests": {"cpu": 4, "memory": "16Gi"}}}},
        "hubTokenSecret": {"name": "hf"},
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "training",
        "imagePullSecrets": [{"name": "regcred"}],
    })
    pod = _pod(build_pytorchjob(job, "sft", 1, "cfg-abc", "claim-x"), "Master")
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == 1000
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"] == {"requests": {"cpu": 4, "memory": "16Gi"}}  # 0 GPUs: none requested
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == "claim-x"
    assert volumes["config"]["configMap"]["name"] == "cfg-abc"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"config": "/etc/kuberlhf", "storage": "/mnt/kuberlhf", "dshm": "/dev/shm"}
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["priorityClassName"] == "training"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_mpijob_launches_deepspeed_over_the_hostfile():
    job = make_job(spec={"launcher": "mpijob", "stages": {"sft": {"nodes": 2, "gpusPerNode": 4}},
                         "hubTokenSecret": {"name": "hf", "key": "t"}})
    child = build_child(job, "sft", 2, "cfg", "claim")
    assert (child["apiVersion"], child["kind"]) == ("kubeflow.org/v2beta1", "MPIJob")
    assert child["spec"]["slotsPerWorker"] == 4 and child["spec"]["mpiImplementation"] == "OpenMPI"
    assert child["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] == 2
    launcher = _pod(child, "Launcher")["containers"][0]
    command = launcher["command"][launcher["command"].index("deepspeed"):]
    assert command[:3] == ["deepspeed", "--hostfile=/etc/mpi/hostfile", "--launcher=openmpi"]
    assert "--force_multi" in command and "--master_addr=demo-sft-2-worker-0.demo-sft-2.team.svc" in command
    # SSH sessions do not inherit the pod's env: the launcher forwards names, never values.
    forwarded = next(a for a in command if a.startswith("--launcher_args="))
    assert "-x HF_TOKEN" in forwarded and "-x HF_HOME" in forwarded and "-x KUBERLHF_REPORT_DIR" in forwarded
    assert command[command.index("--module"):][:4] == ["--module", "kuberlhf_trainer", "step", "sft"]
    assert "nvidia.com/gpu" not in str(launcher["resources"])
    worker = _pod(child, "Worker")["containers"][0]
    assert worker["command"][0] == "/usr/sbin/sshd"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_the_mpijob_launcher_hands_on_the_ranks_report_and_asks_for_resources():
    job = make_job(spec={"launcher": "mpijob"})
    child = build_child(job, "ppo", 3, "cfg", "claim-x")
    launcher_pod = _pod(child, "Launcher")
    launcher = launcher_pod["containers"][0]
    assert launcher["command"][:2] == ["/bin/sh", "-c"] and launcher["command"][3:4] == ["kuberlhf-launcher"]
    reports = "/mnt/kuberlhf/demo/.reports/ppo-3"  # one folder per attempt, on the shared storage
    for container in (launcher, _pod(child, "Worker")["containers"][0]):
        assert {"name": "KUBERLHF_REPORT_DIR", "value": reports} in container["env"]
    assert launcher["volumeMounts"] == [{"name": "storage", "mountPath": "/mnt/kuberlhf", "readOnly": True}]
    assert launcher_pod["volumes"] == [{"name": "storage", "persistentVolumeClaim": {"claimName": "claim-x"}}]
    # Requests keep it from being evicted first and let it run where quotas require them.
    assert launcher["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    custom = make_job(spec={"launcher": "mpijob", "mpi": {"launcherResources": {"requests": {"cpu": "250m"}}}})
    assert _pod(build_child(custom, "sft", 1, "c", "c"), "Launcher")["containers"][0]["resources"] == {
        "requests": {"cpu": "250m"}}
    # PyTorchJob pods read their own termination log: no report folder.
    assert "KUBERLHF_REPORT_DIR" not in str(build_pytorchjob(job, "sft", 1, "cfg", "claim"))


def test_every_pod_template_gets_the_scheduling_settings_and_pod_metadata():
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu.example/class", "operator": "In", "values": ["h100"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}}]}}
    annotations = {"kueue.x-k8s.io/podset-required-topology": "cloud.example/topology-block"}
    for launcher in ("pytorchjob", "mpijob"):
        job = make_job(spec={"launcher": launcher, "stages": {"sft": {"nodes": 2, "activeDeadlineSeconds": 7200}},
                             "schedulerName": "volcano", "priorityClassName": "training", "affinity": affinity,
                             "podLabels": {"team": "nlp"}, "podAnnotations": annotations})
        child = build_child(job, "sft", 1, "cfg", "claim")
        assert child["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7200
        for replica, spec in child["spec"]["pytorchReplicaSpecs" if launcher == "pytorchjob" else
                                           "mpiReplicaSpecs"].items():
            template = spec["template"]
            where = f"{launcher} {replica}"
            assert template["spec"]["schedulerName"] == "volcano", where
            assert template["spec"]["priorityClassName"] == "training", where
            assert template["spec"]["affinity"] == affinity, where
            assert template["metadata"]["annotations"] == annotations, where
            assert template["metadata"]["labels"]["team"] == "nlp", where
            assert template["metadata"]["labels"][LABEL_STAGE] == "sft", where
            assert template["spec"]["terminationGracePeriodSeconds"] == 300, where
    plain = build_pytorchjob(make_job(), "sft", 1, "cfg", "claim")
    assert "activeDeadlineSeconds" not in plain["spec"]["runPolicy"]
    assert not {"affinity", "schedulerName"} & set(_pod(plain, "Master"))


def test_the_grace_period_leaves_time_for_a_checkpoint_of_the_stages_size():
    job = make_job()
    grace = {stage: _pod(build_pytorchjob(job, stage, 1, "c", "c"), "Master")["terminationGracePeriodSeconds"]
             for stage in ("sft", "reward", "ppo")}
    assert grace == {"sft": 300, "reward": 300, "ppo": 600}  # PPO saves actor and critic
    longer = make_job(spec={"stages": {"sft": {"terminationGracePeriodSeconds": 1800}}})
    assert _pod(build_pytorchjob(longer, "sft", 1, "c", "c"), "Master")["terminationGracePeriodSeconds"] == 1800


def test_config_map_holds_the_config_and_is_named_by_content():
    job = make_job(spec={"config": {"seed": 7}})
    cm = build_config_map(job)
    assert yaml.safe_load(cm["data"]["config.yaml"]) == job.spec.config
    assert cm["immutable"] is True and cm["metadata"]["ownerReferences"][0]["uid"] == UID
    assert cm["metadata"]["name"].startswith("demo-trainer-config-")
    changed = build_config_map(make_job(spec={"config": {"seed": 8}}))
    assert changed["metadata"]["name"] != cm["metadata"]["name"]
    assert build_config_map(make_job(spec={"config": {"seed": 7}}))["metadata"]["name"] == cm["metadata"]["name"]


def test_claim_template_becomes_a_pvc_retained_by_default():
    job = make_job(spec={"storage": {"claimName": None, "claimTemplate": {"size": "100Gi", "storageClassName": "nfs"}}})
    pvc = build_pvc(job)
    assert pvc["metadata"]["name"] == "demo-storage"
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "100Gi"}},
                           "storageClassName": "nfs"}
    assert "ownerReferences" not in pvc["metadata"]  # trained models outlive the job unless asked
    deleting = make_job(spec={"storage": {"claimName": None,
                                          "claimTemplate": {"size": "1Gi", "retentionPolicy": "Delete"}}})
    assert build_pvc(deleting)["metadata"]["ownerReferences"][0]["uid"] == UID
    assert build_pvc(make_job()) is None  # an existing claim is used as it is


def pod_templates(child):
    key = "pytorchReplicaSpecs" if child["kind"] == "PyTorchJob" else "mpiReplicaSpecs"
    return {replica: spec["template"]["spec"] for replica, spec in child["spec"][key].items()}


def test_every_pod_of_both_kinds_is_locked_down_and_gets_the_token_by_reference():
    """Master and Worker, Launcher and Worker: no API token, non-root, no escalation, no capabilities."""
    for launcher, replicas in (("pytorchjob", {"Master", "Worker"}), ("mpijob", {"Launcher", "Worker"})):
        job = make_job(spec={"launcher": launcher, "stages": {"sft": {"nodes": 2}},
                             "hubTokenSecret": {"name": "hf", "key": "t"}, "env": [{"name": "A", "value": "1"}]})
        templates = pod_templates(build_child(job, "sft", 1, "cfg", "claim"))
        assert set(templates) == replicas
        for replica, pod in templates.items():
            where = f"{launcher} {replica}"
            assert pod["automountServiceAccountToken"] is False, where
            assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0, where
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
            for container in pod["containers"]:
                security = container["securityContext"]
                assert security == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "runAsNonRoot": True}, where
                token = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
                assert token == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}}}], where
