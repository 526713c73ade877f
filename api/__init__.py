"""The wire contract as data: ``openapi.yaml``, the golden exchanges in ``golden/``, and ``contract`` (the
code that reads them: schema lookup and validation, golden normalization and comparison)."""
