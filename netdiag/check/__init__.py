"""`netdiag check`: network assertions for CI, each failure explained by the diagnosis engines.

spec.py      the check file: YAML read with line numbers, ${VARS}, includes, validated against
             schemas/checkfile.schema.json (an error names FILE:LINE and the field); pure
run.py       each check evaluated through the engines that already exist (diagnose for reach and
             mtu, health for http and latency, health.resolve for dns, the model for the static
             checks), in parallel, with retries and --fail-fast
report.py    text, JSON, JUnit XML and TAP 13 writers; pure
generate.py  a starting check file from what runs now (the pairs that talk, the published ports)

May import: diagnose, health, observe (the live model), reason, model, schemas, runtime.errors.
"""
