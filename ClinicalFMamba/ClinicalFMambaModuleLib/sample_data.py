"""The bundled sample pair as a source of Slicer's Sample Data module.

Slicer's Sample Data module copies a source's files into its download cache and loads them
from there. The files are the bundled ones (file URIs); the SHA-256 checksums are computed
from them at registration, so a cached copy left by an older version of the extension is
replaced: a cached file whose checksum differs is fetched again (SampleData.py, downloadFile:
v5.6.2 lines 868 and 896-899, v5.8.1 lines 942 and 970-973, v5.10.0 lines 1091 and
1119-1122). Cache names start with "ClinicalFMamba-", since the cache is one folder shared by
every source. Neither ``loadFileTypes`` nor ``loadFileType`` is passed: 5.6 has only the
latter (default "VolumeFile", v5.6.2 line 436), 5.8 and later deprecate it for the former
(v5.8.1 lines 478-482, v5.10.0 lines 531-535) and read volumes by default.

The thumbnail, ClinicalFMamba/Resources/Icons/ClinicalFMambaSample.png (260x278: the axial
and coronal rows of the library's orthogonal views of T2 and FLAIR), was written from the
repository root with::

    .venv/bin/python -c "
    import SimpleITK as sitk; from PIL import Image
    from ClinicalFMambaLib.core.intensity import normalize_intensity
    from ClinicalFMambaLib.evaluation.demo import SAMPLE_VOLUMES
    from ClinicalFMambaLib.evaluation.figures import orthogonal_views
    images = {n: sitk.ReadImage(str(p)) for n, p in SAMPLE_VOLUMES.items()}
    views = orthogonal_views({n: normalize_intensity(sitk.GetArrayFromImage(i))
                              for n, i in images.items()}, images['T2'].GetSpacing(), cell=130)
    Image.fromarray(views[:18 + 2 * 130]).save(
        'ClinicalFMamba/Resources/Icons/ClinicalFMambaSample.png')"
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .volume_files import volumeName

CATEGORY = "ClinicalFMamba"
SAMPLE_NAME = "TCGA-DU-7294 T2 + FLAIR"
CACHE_PREFIX = "ClinicalFMamba-"


def sampleDataSource(files: list[Path], thumbnail: Path) -> dict:
    """Keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource``
    for one sample made of the bundled ``files``, loaded as nodes named as
    ``ClinicalFMambaLogic.loadSample`` names them."""
    files = [Path(file).resolve() for file in files]
    return {
        "category": CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": [file.as_uri() for file in files],
        "fileNames": [CACHE_PREFIX + file.name for file in files],
        "nodeNames": [volumeName(file) for file in files],
        "checksums": [f"SHA256:{hashlib.sha256(file.read_bytes()).hexdigest()}" for file in files],
        "thumbnailFileName": str(thumbnail),
    }
