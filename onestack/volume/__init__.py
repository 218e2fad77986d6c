"""Block storage: the Cinder v3 API, its scheduler, volume and backup agents, drivers."""
