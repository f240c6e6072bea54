"""clip2scene core library: CLIP2Scene (CVPR 2023) without ROS."""

__version__ = "0.1.0"
