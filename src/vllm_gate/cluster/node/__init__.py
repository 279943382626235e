"""The local cluster's one real node: its network and mount namespaces, cgroups, configuration files,
the host state it changes and restores, and the images it runs, built locally without a registry. May import
every layer below ``cluster`` and the modules every provider shares (``cluster.base``, ``cluster.children``,
``cluster.gpu_nodes``); never ``dataplane`` or the providers above it."""
