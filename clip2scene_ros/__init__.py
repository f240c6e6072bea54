"""ROS 2 glue for clip2scene: the segmentation node, message conversions, rosbag2 tools."""
