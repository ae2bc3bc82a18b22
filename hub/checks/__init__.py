"""Active checks: results from agents (and from the hub's own ``checks``) projected into
``checks`` (latest per node and check) and ``check_results`` (history). See docs/checks.md."""
