"""netdiag's container runtime: images, containers, networks. Never imports netdiag."""
