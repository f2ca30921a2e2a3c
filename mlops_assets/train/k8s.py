"""Kubernetes requests of the training steps (read by dagster-k8s's ``k8s_job_executor``).

Step pods take an asset's ``op_tags``, not the job's tags (see DESIGN.md), so the tuning and
candidate assets carry these: one NVIDIA GPU, a node selector for GPU nodes and the toleration
of their taint. Without a GPU node the pod stays pending instead of training on the CPU.
"""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATION = {
    "key": GPU_RESOURCE,
    "operator": "Exists",
    "effect": "NoSchedule",
}


def gpu_training_op_tags(cpu: str = "2", memory: str = "8Gi") -> dict[str, Any]:
    """``dagster-k8s/config`` op tags that request one GPU on a GPU node for a step."""
    return {
        "dagster-k8s/config": {
            "container_config": {
                "resources": {
                    "requests": {"cpu": cpu, "memory": memory, GPU_RESOURCE: "1"},
                    "limits": {"memory": memory, GPU_RESOURCE: "1"},
                }
            },
            "pod_spec_config": {
                "node_selector": dict(GPU_NODE_SELECTOR),
                "tolerations": [dict(GPU_TOLERATION)],
            },
        }
    }
