"""The command-line apps: ``dgm-train`` (:mod:`.train`), ``dgm-eval`` (:mod:`.eval`),
``dgm-sample`` (:mod:`.sample`), ``dgm-study`` (:mod:`.study`) and ``dgm-report``
(:mod:`.report`); :mod:`.common` holds what they share, :mod:`.checks` the checks of the
command line made before Hydra runs."""
