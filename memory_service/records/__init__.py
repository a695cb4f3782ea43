"""The platform records beside the memories: tenants and their keys, tasks, environments
(with write-only secrets) and the console's sessions. Each module owns its tables' SQL."""
