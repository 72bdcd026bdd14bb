"""JSON Schemas for the parts of KubeRay's ray.io/v1 custom resources that infra/k8s/ uses, written for these tests.

No KubeRay CRD ships in a Python package and tests fetch nothing, so this file declares the RayCluster, RayJob and
RayService fields by the names KubeRay's v1 API gives them (operator 1.x), strictly: an unknown or misspelt key is an
error, as `kubectl apply` with server-side field validation would report. Pod templates are left open here; the
tests check them against the real Kubernetes schema (kubernetes-validate). This is a subset, not the CRD: a field
we do not use may be missing, and adding it here is the fix when a manifest starts to use it.
"""

from __future__ import annotations

from typing import Any


def strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}  # rayStartParams: values are strings
POD_TEMPLATE = {"type": "object", "required": ["spec"]}  # checked against Kubernetes' PodTemplateSpec separately
REPLICAS = {"type": "integer", "minimum": 0}

HEAD_GROUP = strict({
    "rayStartParams": STRING_MAP,
    "template": POD_TEMPLATE,
    "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "headService": {"type": "object"},
    "enableIngress": {"type": "boolean"},
}, required=("template",))

WORKER_GROUP = strict({
    "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    "replicas": REPLICAS,
    "minReplicas": REPLICAS,
    "maxReplicas": REPLICAS,
    "numOfHosts": {"type": "integer", "minimum": 1},
    "idleTimeoutSeconds": {"type": "integer", "minimum": 0},
    "rayStartParams": STRING_MAP,
    "template": POD_TEMPLATE,
    "scaleStrategy": {"type": "object"},
    "suspend": {"type": "boolean"},
}, required=("groupName", "template", "maxReplicas"))

RAY_CLUSTER_SPEC = strict({
    "rayVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
    "enableInTreeAutoscaling": {"type": "boolean"},
    "autoscalerOptions": {"type": "object"},
    "headServiceAnnotations": STRING_MAP,
    "headGroupSpec": HEAD_GROUP,
    "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
    "gcsFaultToleranceOptions": {"type": "object"},
    "suspend": {"type": "boolean"},
    "managedBy": {"type": "string"},
}, required=("headGroupSpec",))

RAY_JOB_SPEC = strict({
    "entrypoint": {"type": "string", "minLength": 1},
    "runtimeEnvYAML": {"type": "string"},
    "metadata": STRING_MAP,
    "jobId": {"type": "string"},
    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
    "shutdownAfterJobFinishes": {"type": "boolean"},
    "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
    "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
    "backoffLimit": {"type": "integer", "minimum": 0},
    "entrypointNumCpus": {"type": "number"},
    "entrypointNumGpus": {"type": "number"},
    "entrypointResources": {"type": "string"},
    "rayClusterSpec": RAY_CLUSTER_SPEC,
    "clusterSelector": STRING_MAP,
    "submitterPodTemplate": POD_TEMPLATE,
    "submitterConfig": {"type": "object"},
    "suspend": {"type": "boolean"},
    "managedBy": {"type": "string"},
}, required=("entrypoint",))

RAY_SERVICE_SPEC = strict({
    "serveConfigV2": {"type": "string", "minLength": 1},
    "rayClusterConfig": RAY_CLUSTER_SPEC,
    "serveService": {"type": "object"},
    "upgradeStrategy": {"type": "object"},
    "excludeHeadPodFromServeSvc": {"type": "boolean"},
    "deploymentUnhealthySecondThreshold": {"type": "integer"},
    "serviceUnhealthySecondThreshold": {"type": "integer"},
}, required=("serveConfigV2", "rayClusterConfig"))

METADATA = {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}}}


def resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return strict({"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": kind}, "metadata": METADATA,
                   "spec": spec}, required=("apiVersion", "kind", "metadata", "spec"))


SCHEMAS = {"RayCluster": resource("RayCluster", RAY_CLUSTER_SPEC), "RayJob": resource("RayJob", RAY_JOB_SPEC),
           "RayService": resource("RayService", RAY_SERVICE_SPEC)}


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec inside any of the three kinds."""
    return {"RayCluster": lambda: doc["spec"], "RayJob": lambda: doc["spec"]["rayClusterSpec"],
            "RayService": lambda: doc["spec"]["rayClusterConfig"]}[doc["kind"]]()


def pod_templates(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Group name ('head' for the head) -> pod template."""
    spec = cluster_spec(doc)
    return {"head": spec["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in spec.get("workerGroupSpecs", [])}}
