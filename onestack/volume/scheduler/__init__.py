"""The volume scheduler: filters and weighers over the backends the agents report."""
