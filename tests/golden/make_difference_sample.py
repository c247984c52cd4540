"""Write the golden inputs of the models trained on difference stamps: a few objects of the difference benchmark.

    python tests/golden/make_difference_sample.py /work/data/plasticc-difference.fits \
        --out tests/golden/difference-sample.fits

(the catalog of ``python -m train.data.plasticc --scene difference --seed 0``.)  Takes the
first ``--per-class`` spectroscopically typed objects of each class, each with the
``--frames`` consecutive epochs centred on its brightest difference stamp (the largest
sum of the central 5x5 pixels), so that the few frames kept hold the event; the
primary header's photometric contract (``CUTOUT = 'difference'``) is the catalog's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from convention_rt.catalog_writer import CatalogWriter
from convention_rt.photometry import Photometry


def main(argv: list[str] | None = None) -> int:
    """Command line: 0 when the sample is written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("catalog", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--frames", type=int, default=48)
    options = parser.parse_args(argv)
    with fits.open(options.catalog, memmap=True) as hdus:
        header = hdus[0].header
        objects, epochs = hdus["OBJECTS"].data, hdus["EPOCHS"].data
        bands = tuple(header["BANDS"].split(",")) if "BANDS" in header else tuple(sorted(set(epochs["BAND"][:5000])))
        photometry = Photometry.from_header(header)
        chosen: dict[str, list[int]] = {}
        for row, (label, typing) in enumerate(zip(objects["LABEL"], objects["TYPING"])):
            if typing == "spec" and len(chosen.setdefault(label, [])) < options.per_class:
                chosen[label].append(row)
        with CatalogWriter(options.out, bands, photometry=photometry, overwrite=True,
                           header={"SOURCE": "difference benchmark subset"}) as writer:
            for label in sorted(chosen):
                for row in chosen[label]:
                    first, count = int(objects["FIRST_EPOCH"][row]), int(objects["N_EPOCHS"][row])
                    stamps = np.asarray(epochs["STAMP"][first:first + count], dtype=np.float32)
                    brightest = int(np.argmax(stamps[:, 14:19, 14:19].sum(axis=(1, 2))))
                    start = min(max(0, brightest - options.frames // 2), max(0, count - options.frames))
                    rows = slice(first + start, first + min(count, start + options.frames))
                    writer.add_object(int(objects["OBJECT_ID"][row]), mjd=epochs["MJD"][rows],
                                      stamps=np.asarray(epochs["STAMP"][rows], dtype=np.float32),
                                      bands=[str(b) for b in epochs["BAND"][rows]],
                                      ra=float(objects["RA"][row]), dec=float(objects["DEC"][row]),
                                      label=str(label), typing="spec")
    print(f"{options.out}: {sum(map(len, chosen.values()))} objects of {options.catalog}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
