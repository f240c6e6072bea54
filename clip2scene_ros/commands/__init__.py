"""`clip2scene` subcommands that need the ROS layer (registered through the ``clip2scene.commands``
entry-point group, so the ROS-free CLI lists them without knowing this package)."""
