"""The stages of a run as Dask/xarray layers over the per-frame kernels.

Each stage maps a pure numpy kernel over the frames of a labelled stack and,
where it needs to, reduces them: :mod:`.reconstruction` (raw alignment,
reconstruction and normalisation of every hologram, lazily),
:mod:`.averaging` (the iterative average as a Dataset), on top of the graph
of averaging rounds in :mod:`.rounds`.
"""
