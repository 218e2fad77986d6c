"""Background agents of a storage node: replicators, auditor, updaters, expirer.

Each runs inside the all-in-one process or alone (``onestack agent NAME``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from onestack.core.config import ObjectSettings
from onestack.core.heartbeat import PeriodicTask

AGENTS = (
    "object-replicator",
    "container-replicator",
    "account-replicator",
    "object-auditor",
    "object-updater",
    "container-updater",
    "object-expirer",
)


def build_agent(name: str, service: Any) -> Callable[[], Awaitable[Any]]:
    """The agent called ``name`` for a started object service (its node and store)."""
    from onestack.object.agents.auditor import Auditor
    from onestack.object.agents.expirer import Expirer
    from onestack.object.agents.replicator import DatabaseReplicator, ObjectReplicator
    from onestack.object.agents.updater import ContainerUpdater, ObjectUpdater
    from onestack.object.storage.databases import ACCOUNT, CONTAINER

    if name == "object-expirer":
        return Expirer(service.store)
    args = (service.cluster, service.node, service.address)
    if name == "object-replicator":
        return ObjectReplicator(*args)
    if name == "container-replicator":
        return DatabaseReplicator(*args, kind=CONTAINER)
    if name == "account-replicator":
        return DatabaseReplicator(*args, kind=ACCOUNT)
    if name == "object-auditor":
        return Auditor(*args)
    if name == "object-updater":
        return ObjectUpdater(*args)
    if name == "container-updater":
        return ContainerUpdater(*args)
    raise ValueError(f"unknown agent {name!r} (one of {', '.join(AGENTS)})")


def interval(name: str, config: ObjectSettings) -> float:
    if name.endswith("replicator"):
        return config.replicator_interval
    if name.endswith("auditor"):
        return config.auditor_interval
    if name.endswith("expirer"):
        return config.expirer_interval
    return config.updater_interval


def start_agents(
    service: Any, config: ObjectSettings, names: tuple[str, ...] = AGENTS
) -> list[PeriodicTask]:
    """Run the agents in this process, each on its own interval."""
    tasks = []
    for name in names:
        task = PeriodicTask(name, interval(name, config), build_agent(name, service))
        task.start()
        tasks.append(task)
    return tasks
