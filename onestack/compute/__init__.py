"""Compute (Nova v2.1): API, conductor, scheduler and the compute agents over hypervisor drivers."""
