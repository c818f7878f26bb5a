"""What several test modules share: tiny configs, tiny data sets, subprocess runs.

- `configs`: any config file's `get_config`, `tiny_pretrain_config` and `tiny_finetune_config`.
- `finetune`: a tiny CASME II-layout set, fold steps on fixed data, killed and multi-process runs.
- `pretrain`: a small synthetic DFEW-layout set, subprocess and multi-process pre-training runs.
- `release_layouts`: tiny on-disk copies of the six releases' layouts, quirks included.
"""
