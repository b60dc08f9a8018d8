"""The command-line apps: ``dgm-train`` (:mod:`.train`), ``dgm-eval`` (:mod:`.eval`),
``dgm-sample`` (:mod:`.sample`), ``dgm-study`` (:mod:`.study`), ``dgm-report``
(:mod:`.report`) and ``dgm-reflow-pairs`` (:mod:`.reflow_pairs`); :mod:`.common` holds what
they share, :mod:`.checks` the checks of the command line made before Hydra runs."""
