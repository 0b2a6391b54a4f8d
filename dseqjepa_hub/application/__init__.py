"""The application around the model core: everything users of the package run that is not the model.

Organised by job: loading a model by path, name, id or training run (`loading`), the one
batched-inference runner over image files (`runner`, torchrun shards in `sharding`), the folder
jobs on it (`regions_job`, `embed_job`, `visualize_job`), what they compute and draw
(`feature_maps`, `drawing`, `region_json`), atomic writers (`atomic`), publishing
(`publish`, `space`), the browser demo (`demo`) and `dseqjepa info` (`info`).

It imports the core (the flat files of `dseqjepa_hub/`); the core never imports it, so none of
it travels to the Hub as remote code.
"""
