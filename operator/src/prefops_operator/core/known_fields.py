"""Every field of a PreferenceTrainingJob's spec, as the CRD declares them.

Generated from crds/ by scripts/gen_operator_files.py (a test checks it is current): do not edit.

An object is a dict of its fields; ``MAP`` is a map whose keys are free (``resources.requests``); a one-item list
is a list of such items; ``None`` is a value.
"""

from __future__ import annotations

from typing import Any

MAP = "*"

SPEC: dict[str, Any] = {
    "model": {
        "source": None,
        "revision": None,
        "dtype": None,
        "attnImplementation": None,
        "trustRemoteCode": None,
        "configMap": None,
        "lora": {
            "r": None,
            "alpha": None,
            "dropout": None,
            "targetModules": None,
        },
    },
    "dataset": {
        "source": None,
        "split": None,
        "evalSplit": None,
        "maxLength": None,
        "truncationMode": None,
        "maxSamples": None,
    },
    "algorithm": {
        "name": None,
        "lossType": None,
        "lossWeights": None,
        "beta": None,
        "labelSmoothing": None,
        "simpoGamma": None,
        "cpoAlpha": None,
        "alpha": None,
        "desirableWeight": None,
        "undesirableWeight": None,
    },
    "rewardModel": {
        "source": None,
        "revision": None,
        "dtype": None,
        "trustRemoteCode": None,
        "configMap": None,
    },
    "generation": {
        "maxNewTokens": None,
        "temperature": None,
        "topP": None,
    },
    "training": {
        "epochs": None,
        "maxSteps": None,
        "learningRate": None,
        "lrScheduler": None,
        "warmupRatio": None,
        "weightDecay": None,
        "maxGradNorm": None,
        "perDeviceBatchSize": None,
        "gradientAccumulation": None,
        "gradientCheckpointing": None,
        "prefixSharing": None,
        "seed": None,
        "logEverySteps": None,
        "checkpointEverySteps": None,
        "checkpointsToKeep": None,
        "deepspeed": {
            "stage": None,
            "offload": None,
        },
    },
    "reference": {
        "precompute": None,
        "batchSize": None,
        "tokensPerBatch": None,
        "workers": None,
        "verifySamples": None,
    },
    "resources": {
        "image": None,
        "nodes": None,
        "gpusPerNode": None,
        "processesPerNode": None,
        "gpuMemory": None,
        "fitCheck": None,
        "requests": MAP,
        "limits": MAP,
        "nodeSelector": MAP,
        "tolerations": [
            {
                "key": None,
                "operator": None,
                "value": None,
                "effect": None,
                "tolerationSeconds": None,
            },
        ],
        "priorityClassName": None,
        "schedulerName": None,
        "queueName": None,
        "serviceAccountName": None,
    },
    "output": {
        "uri": None,
        "merge": None,
        "gate": {
            "metric": None,
            "min": None,
            "max": None,
        },
    },
    "storage": {
        "uri": None,
        "credentialsSecret": None,
    },
    "suspend": None,
    "backoffLimit": None,
    "activeDeadlineSeconds": None,
    "startupDeadlineSeconds": None,
    "ttlSecondsAfterFinished": None,
}
