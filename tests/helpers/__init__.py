"""Test helpers in one place, imported as a package (`from tests.helpers.videos import ...`):
`videos` holds the synthetic test videos (tiny moving-object clips, the exact moving square)
and the bad inputs precompute must survive; `configs` builds test configs through
`pipeline.config`'s own loader (`tiny_config(*overrides)`, `yaml_config(tmp_path, text)`)."""
