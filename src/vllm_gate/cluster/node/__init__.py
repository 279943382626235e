"""The local cluster's one real node: its network and mount namespaces, cgroups, configuration files,
the host state it changes and restores, and the images it runs, built locally without a registry. May import
``base`` and ``cluster`` modules outside ``node`` and ``dataplane``."""
