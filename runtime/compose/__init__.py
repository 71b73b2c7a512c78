"""Compose files: read (document: bounded YAML, interpolation, the Compose specification's own JSON
schema, vendored beside this file with its licence) and turned into a Project with Docker Compose's
names (model). Pure: no kernel, no state; runtime.api.compose makes and removes what a Project
describes. May import runtime.bounded, runtime.errors, runtime.validate and the parsers of
runtime.networks.ports and runtime.containers.volumes, and
runtime.containers.security's checks of capabilities and security options."""
