"""Registries: the OCI distribution protocol client (pull, push) and Docker's client configuration.

    errors.py      RegistryError: what failed, with a cause code the diagnosis builds on
    dockerconfig.py  ~/.docker/config.json (DOCKER_CONFIG): `auths`, credential helpers (login/logout)
    transport.py   one HTTP session per registry: TLS (system CAs + certs.d/HOST/), insecure
                   registries, the WWW-Authenticate challenge (Basic, Bearer tokens)
    manifests.py   manifest documents (OCI manifest/index, Docker schema 2/manifest list), platforms
    blobs.py       blobs verified by digest while they stream; uploads (HEAD, mount, chunked)
    pull.py, push.py  the two actions over the image store

May import runtime.images (the store, references), runtime.state, paths, errors, bounded; never
containers, networks or netdiag. httpx is imported only here (lazily: `netdiag ps` never loads it).
"""
