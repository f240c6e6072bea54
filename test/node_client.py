"""A test-side ROS client of the segmentation node: publishes clouds, collects outputs, sets parameters."""
from __future__ import annotations

import json

import numpy as np

from clip2scene_ros.topics import (INPUT_POINTCLOUD, OUTPUT_CLASS_NAMES, OUTPUT_OBJECTS, OUTPUT_POINTCLOUD,
                                 legacy_remappings)
from ros_harness import RosProcess, spin_until


def make_cloud_columns(seed: int, count: int = 3000) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.uniform(-20, 20, count).astype(np.float32),
        "y": rng.uniform(-20, 20, count).astype(np.float32),
        "z": rng.uniform(-2, 3, count).astype(np.float32),
        "intensity": rng.random(count, dtype=np.float32),
    }


class NodeClient:
    """Publishes clouds to the node, collects its outputs and talks to its parameter service."""

    def __init__(self, context, namespace: str = "", node_name: str = "clip2scene_segment",
                 launched: bool = False) -> None:
        """``launched``: the node runs under launch/segment.launch.py's remappings (its earlier topic
        names, in its namespace); otherwise it has its own ``~/input/...`` / ``~/output/...`` names."""
        import rclpy
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String
        from visualization_msgs.msg import MarkerArray

        self.node = rclpy.create_node("node_test_client", context=context, namespace=namespace or None)
        self.node_name = node_name
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        names = dict(legacy_remappings()) if launched else {}
        topic = lambda name: names.get(name, name).replace("~", node_name, 1)  # noqa: E731
        self.publisher = self.node.create_publisher(PointCloud2, topic(INPUT_POINTCLOUD), reliable)
        self.outputs: list = []
        self.announcements: list[dict] = []
        self.node.create_subscription(PointCloud2, topic(OUTPUT_POINTCLOUD), self.outputs.append, reliable)
        self.objects: list = []
        self.node.create_subscription(MarkerArray, topic(OUTPUT_OBJECTS), self.objects.append, reliable)
        self.node.create_subscription(String, topic(OUTPUT_CLASS_NAMES),
                                      lambda m: self.announcements.append(json.loads(m.data)), latched)
        self.set_parameters = self.node.create_client(
            SetParameters, f"{namespace.rstrip('/')}/{node_name}/set_parameters")
        self.diagnostics: dict[str, str] = {}
        self.diagnostic_status = None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)

    def wait_until_connected(self, process: RosProcess) -> None:
        spin_until(self.executor, lambda: self.publisher.get_subscription_count() > 0
                   and self.announcements and self.set_parameters.service_is_ready()
                   or process.poll() is not None, 120, "the node to come up")
        assert process.poll() is None, f"node exited early:\n{process.output()}"

    def _on_diagnostics(self, message) -> None:
        for status in message.status:
            if self.node_name in status.name:
                self.diagnostics = {value.key: value.value for value in status.values}
                self.diagnostic_status = status

    def wait_for_counter(self, key: str, value: int, timeout: float = 30.0) -> None:
        spin_until(self.executor, lambda: int(self.diagnostics.get(key, -1)) >= value, timeout,
                   f"diagnostics {key} >= {value}")

    def send(self, message, timeout: float = 60.0):
        """Publish one cloud and return the node's output for it."""
        before = len(self.outputs)
        self.publisher.publish(message)
        spin_until(self.executor, lambda: len(self.outputs) > before, timeout, "a segmented cloud")
        return self.outputs[-1]

    def set_class_names(self, names, wait: bool = True):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[Parameter("class_names", Parameter.Type.STRING_ARRAY, list(names)).to_parameter_msg()])
        future = self.set_parameters.call_async(request)
        if not wait:
            return future
        spin_until(self.executor, future.done, 30, "the parameter service")
        return future.result().results[0]

    def set_string_arrays(self, wait: bool = True, **values: list[str]):
        """Set several string-array parameters in one request; returns one result per parameter (or,
        without ``wait``, the request's future)."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[
            Parameter(name, Parameter.Type.STRING_ARRAY, list(value)).to_parameter_msg()
            for name, value in values.items()])
        future = self.set_parameters.call_async(request)
        if not wait:
            return future
        spin_until(self.executor, future.done, 30, "the parameter service")
        return future.result().results

    def set_string_arrays_atomically(self, **values: list[str]):
        """Set several string-array parameters as one change (all or none); returns its result."""
        from rcl_interfaces.srv import SetParametersAtomically
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParametersAtomically,
                                         f"{self.set_parameters.srv_name.rsplit('/', 1)[0]}/set_parameters_atomically")
        try:
            spin_until(self.executor, client.service_is_ready, 30, "the atomic parameter service")
            future = client.call_async(SetParametersAtomically.Request(parameters=[
                Parameter(name, Parameter.Type.STRING_ARRAY, list(value)).to_parameter_msg()
                for name, value in values.items()]))
            spin_until(self.executor, future.done, 30, "the atomic parameter service")
            return future.result().result
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
