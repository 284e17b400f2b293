"""Application services: what the command line, the HTTP API and the flows do with shots, runs,
reviews and trust records, apart from how they are asked (CLI, HTTP) and from the Prefect tasks
of the pipeline.

Dependency direction: ``recast.cli`` / ``recast.api`` → ``recast.services`` / ``recast.flows`` →
``recast.tasks`` → models, media, storage, db. Tasks never import services.

* :mod:`recast.services.shots`: submitting shots, the run's life cycle, what a flow reads.
* :mod:`recast.services.review`: the review decision path (pause, decision, approval, re-run).
* :mod:`recast.services.trust`: projects, identities and consent, verification, revocation, audit.
* :mod:`recast.services.runs`: read-side views of runs, stage runs and lineage.
* :mod:`recast.services.qc`: QC results of a shot, and QC of any plate/output pair of files.
* :mod:`recast.services.processes`: the embedded Prefect server, run owners, signals and exits,
  errors of the environment (full disk, read-only directories).
"""
