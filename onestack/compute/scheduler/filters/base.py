"""The filter contract: what a scheduler filter (built in or plugged in) implements."""

from __future__ import annotations

from onestack.compute.scheduler.state import HostState, RequestSpec


class HostFilter:
    """Says whether one host can take one instance of a request.

    Plug-in filters subclass this and register under the entry point group
    ``onestack.compute.scheduler.filters`` (entry point name = the name operators put
    in ``enabled_filters``).
    """

    #: True when the answer cannot change while one request's instances are placed,
    #: so the filter runs once per request instead of once per instance.
    run_once_per_request = False

    @property
    def name(self) -> str:
        """The name operators enable the filter by and failures report."""
        return type(self).__name__

    def applies(self, spec: RequestSpec) -> bool:
        """Whether the request asks anything of this filter (else it is skipped)."""
        return True

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        """Whether ``host`` can take an instance of ``spec``."""
        raise NotImplementedError
