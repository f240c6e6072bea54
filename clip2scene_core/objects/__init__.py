"""Open-vocabulary objects from labelled LiDAR points, without ROS.

* ``clustering.py``: the points of each thing class grouped into instances (voxel-grid connected
  components), ``ClusteringParams``.
* ``boxes.py``: per object its class, mean score, point count, centroid and yaw-oriented 3D box.
* ``extract.py``: both in one call, ``extract_objects`` (what the node runs after segmentation).
* ``panoptic_quality.py``: PQ / SQ / RQ against ground-truth instances (Kirillov et al., 2019).
"""
from .boxes import Objects, box_corners, object_boxes
from .clustering import (ClusteringParams, check_thing_classes, cluster_instances, thing_class_indices,
                         validated_thing_names)
from .extract import extract_objects
from .panoptic_quality import PanopticQuality

__all__ = ["ClusteringParams", "Objects", "PanopticQuality", "box_corners", "check_thing_classes", "cluster_instances",
           "extract_objects", "object_boxes", "thing_class_indices", "validated_thing_names"]
