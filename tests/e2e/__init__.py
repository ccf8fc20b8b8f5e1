"""End-to-end tests on a real node: a package, so that its package-scoped cluster stops when they end."""
