"""HDF5 frames: a 2-D/3-D dataset (``?dataset=``) or an image-series group (``?path=``).

``file.hdf5?dataset=NAME``
    a 2-D dataset (one frame) or a 3-D dataset (frames x rows x columns).
    Where the dataset sits in a HyperSpy signal group (``axis-0``, ``axis-1``,
    ... subgroups and ``metadata/Acquisition_instrument/TEM``) its calibration
    gives sampling, voltage and microscope.
``file.hdf5?path=GROUP``
    an HDF5 image series: ``GROUP/images`` holds frames x rows x columns;
    calibration comes from the group's attributes (``sampling_nm``,
    ``voltage_kV``, ``binning``, ``microscope``, ``detector``) and every other
    1-D dataset of length n_frames in the group becomes a per-frame coordinate.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from holodask.errors import InputFileError
from holodask.io.calibration import length_to_nm, to_float, to_text
from holodask.io.registry import FileSpec, FrameMetadata, StoredHeaderSource, register_reader

__all__ = ["HDF5Source"]

#: attribute names (group or dataset) -> FrameMetadata field
_ATTRIBUTE_NAMES = {
    "sampling_nm": ("sampling_nm", "sampling"),
    "voltage_kV": ("voltage_kV", "voltage_kv", "voltage"),
    "binning": ("binning",),
    "microscope": ("microscope",),
    "detector": ("detector", "camera"),
}


def _open(spec: FileSpec) -> h5py.File:
    try:
        return h5py.File(spec.path, "r")
    except OSError as exc:
        raise InputFileError(f"{spec.path}: cannot read as HDF5 file ({exc})") from None


@register_reader("hdf5", "h5")
class HDF5Source(StoredHeaderSource):
    """Frames of a 2-D/3-D HDF5 dataset or of an image-series group."""

    def __init__(self, spec: FileSpec):
        super().__init__(spec)
        dataset_name = spec.options.get("dataset")
        group_name = spec.options.get("path")
        if dataset_name and group_name:
            raise InputFileError(
                f"{spec.path}: give either dataset= or path= in the file spec, not both"
            )
        if not dataset_name and not group_name:
            raise InputFileError(
                f"{spec.path}: HDF5 file spec needs the option dataset=NAME "
                "(or path=GROUP for an image-series group)"
            )
        self._coords: dict[str, np.ndarray] = {}
        with _open(spec) as h5:
            if group_name:
                group = h5.get(group_name)
                if not isinstance(group, h5py.Group):
                    raise InputFileError(f"{spec.path}: no HDF5 group {group_name!r}")
                images = group.get("images")
                if not isinstance(images, h5py.Dataset):
                    raise InputFileError(
                        f"{spec.path}: group {group_name!r} holds no dataset 'images'"
                    )
                self.dataset_name = images.name
                self._check_rank(images)
                meta = self._metadata_from_attributes(group.attrs)
                n = self._n_frames_of(images.shape)
                for key, item in group.items():
                    if key == "images" or not isinstance(item, h5py.Dataset):
                        continue
                    if item.ndim == 1 and item.shape[0] == n:
                        self._coords[key] = np.asarray(item[()])
            else:
                item = h5.get(dataset_name)
                if not isinstance(item, h5py.Dataset):
                    raise InputFileError(f"{spec.path}: no HDF5 dataset {dataset_name!r}")
                self.dataset_name = item.name
                self._check_rank(item)
                meta = self._metadata_from_attributes(item.attrs)
                self._hyperspy_metadata(item, meta)
            self._shape3 = images.shape if group_name else item.shape
            self._dtype = (images if group_name else item).dtype
        if len(self._shape3) == 2:
            self._shape3 = (1, *self._shape3)
        self._metadata = meta
        self._n_frames, self._shape = self._shape3[0], self._shape3[1:]

    # ------------------------------------------------------------------ header
    def _check_rank(self, dataset: h5py.Dataset) -> None:
        if dataset.ndim not in (2, 3):
            raise InputFileError(
                f"{self.spec.path}: dataset {dataset.name!r} has shape {dataset.shape}; "
                "expected a 2-D image or a 3-D stack (frames, rows, columns)"
            )

    @staticmethod
    def _n_frames_of(shape: tuple[int, ...]) -> int:
        return 1 if len(shape) == 2 else shape[0]

    @staticmethod
    def _metadata_from_attributes(attrs) -> FrameMetadata:
        found: dict[str, Any] = {}
        for field_name, names in _ATTRIBUTE_NAMES.items():
            for name in names:
                if name in attrs:
                    found[field_name] = attrs[name]
                    break
        binning = to_float(found.get("binning"))
        return FrameMetadata(
            sampling_nm=to_float(found.get("sampling_nm")),
            voltage_kV=to_float(found.get("voltage_kV")),
            binning=int(binning) if binning else None,
            microscope=to_text(found.get("microscope")),
            detector=to_text(found.get("detector")),
        )

    def _hyperspy_metadata(self, dataset: h5py.Dataset, meta: FrameMetadata) -> None:
        """Fill ``meta`` from a HyperSpy signal group around ``dataset``."""
        group = dataset.parent
        axes = []
        for k in range(dataset.ndim):
            axis = group.get(f"axis-{k}")
            if not isinstance(axis, h5py.Group):
                return
            axes.append(axis.attrs)
        x_axis = axes[-1]  # the last axis runs along the columns
        units = to_text(x_axis.get("units"))
        if meta.sampling_nm is None and "scale" in x_axis:
            sampling = length_to_nm(x_axis.get("scale"), units)
            if sampling is not None:
                meta.sampling_nm = sampling
            elif units:  # a unit, but not a length
                meta.extra["sampling_unit"] = units
                meta.extra["sampling_scale"] = to_float(x_axis.get("scale"))
        tem = group.get("metadata/Acquisition_instrument/TEM")
        if isinstance(tem, h5py.Group):
            if meta.voltage_kV is None:
                meta.voltage_kV = to_float(tem.attrs.get("beam_energy"))
            if meta.microscope is None:
                meta.microscope = to_text(tem.attrs.get("microscope"))
            detector = tem.get("Detector")
            if meta.detector is None and isinstance(detector, h5py.Group):
                for sub in detector.values():
                    if isinstance(sub, h5py.Group):
                        meta.detector = to_text(sub.attrs.get("detector_name")) or to_text(
                            sub.name.rsplit("/", 1)[-1]
                        )
                        break
            camera = tem.get("Camera")
            if meta.binning is None and isinstance(camera, h5py.Group):
                binning = to_float(camera.attrs.get("binning"))
                meta.binning = int(binning) if binning else None
        general = group.get("metadata/General")
        if isinstance(general, h5py.Group):
            title = to_text(general.attrs.get("title"))
            if title:
                meta.extra["title"] = title

    # ------------------------------------------------------------------ API
    def read_frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        with _open(self.spec) as h5:
            dataset = h5[self.dataset_name]
            frame = dataset[()] if dataset.ndim == 2 else dataset[index]
        return np.asarray(frame)

    reads_regions = True

    def read_region(self, index: int, rows: slice, cols: slice) -> np.ndarray:
        self._check_index(index)
        with _open(self.spec) as h5:
            dataset = h5[self.dataset_name]
            part = dataset[rows, cols] if dataset.ndim == 2 else dataset[index, rows, cols]
        return np.asarray(part)
