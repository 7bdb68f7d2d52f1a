"""The kuberlhf operator: runs an RLHFJob's stages (SFT, reward model, PPO) as Kubeflow jobs.

Layout, in the order a reader needs it:

- `api`         the RLHFJob spec and status types (the single source of the CRD, with crdgen)
- `names`       API coordinates, labels, annotations and child names
- `builders`    pure functions: RLHFJob -> ConfigMap, PVC, PyTorchJob or MPIJob manifests
- `observe`     what a child job's status says (Kubeflow JobConditions -> a stage state)
- `decide`      pure function: (RLHFJob, children, now) -> new status and actions
- `reconciler`  carries out a decision against the API server
- `handlers`    thin kopf glue; `python -m kuberlhf_operator` runs it

This package never imports torch or `kuberlhf_trainer`: it passes the training config
through to the trainer, which validates what the API server cannot.
"""
