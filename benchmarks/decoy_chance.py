"""Traces the noise map's ``decoy_first`` on the markers data against its exact chance.

    python benchmarks/decoy_chance.py                   # 1,000 validation images of data seeds 0, 1, 2
    python benchmarks/decoy_chance.py --images 200 --seeds 0 --salts 20   # a quick look

``decoy_first`` (`kerascam.evaluation.scores.decoys`) asks whether the
evidence marker has the strictly highest MEAN map value of the markers. For
i.i.d. noise the mean over few pixels spreads more, so the marker with the
fewest pixels wins more often than 1 / N: a small (1-px-cell, 3-4 px) evidence
marker among normal (27-36 px) decoys is first with probability 0.44, a
normal one among small decoys with 0.26. The chance of a class-blind map is
1/3 over the generator only because the evidence and decoy markers draw their
pixel counts alike; the chance of a given set of images is the mean over the
images of the exact probability given the three counts (Irwin-Hall: the mean
of n uniforms), which this script computes and compares with

* the seeded noise map (`kerascam.evaluation.baselines.noise_maps`, seeded by
  the CRC-32 of the image's bytes): the Poisson-binomial test of its hit
  count against the per-image chances, per seed and pooled;
* the same map with other seeds derived the same way (the CRC-32 of the image
  salted with s = 1..S): if seeding by the image leaned on the evidence, these
  would sit away from the exact chance too.

Prints the pixel counts of evidence and decoy markers (and whether any marker
lost pixels to its disk, the image border or another part), the seed
collisions, the scores and the tests. Drawing the images costs most: about
1 CPU-minute per 1,000 images on the 2-core development machine beside
trainings (3.5 CPU-minutes for the default run); ``--seeds 0 --salts 10``
takes well under one.
"""

import argparse
import collections
import time
import zlib

import numpy as np
from scipy import integrate, stats

from kerascam.data import markers
from kerascam.evaluation.baselines import noise_maps
from kerascam.evaluation.scores.decoys import evidence_among_markers


def draw(seed, count):
    """Images, parts and the drawn cell count x cell area of each marker (evidence first)."""
    config = markers.MarkersConfig(seed=seed, validation_examples=count)
    images, parts, drawn = [], [], []
    for index, label in enumerate(markers.labels(config, "validation")):
        scene = markers.draw_scene(config, "validation", index, int(label))
        image, part = markers.render(scene)
        images.append(image)
        parts.append(part)
        drawn.append([len(d.marker.cells) * d.marker.cell_size ** 2 for d in scene.disks])
    return np.stack(images), np.stack(parts), np.array(drawn)


def pixel_counts(parts, objects):
    """(n, objects) pixels of each marker in the parts map (evidence first; 0 where absent)."""
    return np.stack([(parts == 2 * k + 1).sum(axis=(1, 2)) for k in range(objects)], axis=1)


def first_probability(counts):
    """P(the first mean is strictly the highest) for i.i.d. U(0, 1) pixels with these pixel counts.

    The mean of n uniforms follows the Irwin-Hall law scaled by 1/n, so the
    probability is the integral of f_n0(x) F_n1(x) F_n2(x) ... over [0, 1].
    """
    laws = [stats.irwinhall(int(n), scale=1.0 / int(n)) for n in counts]

    def integrand(x):
        value = laws[0].pdf(x)
        for law in laws[1:]:
            value = value * law.cdf(x)
        return value

    return integrate.quad(integrand, 0.0, 1.0, points=[0.5], limit=200, epsabs=1e-10)[0]


def poisson_binomial_test(hits, probabilities):
    """Two-sided p-value of `hits` successes among independent Bernoulli(p_i) trials.

    The exact distribution by dynamic programming; two-sided as the sum of
    the probabilities of outcomes no more likely than the observed one.
    """
    distribution = np.array([1.0])
    for p in probabilities:
        distribution = np.concatenate([distribution * (1 - p), [0.0]]) + np.concatenate([[0.0], distribution * p])
    observed = distribution[int(hits)]
    return float(min(1.0, distribution[distribution <= observed * (1 + 1e-9)].sum()))


def salted_noise_first(image_crcs, marker_pixels, shape, salt):
    """Hit rate of decoy_first for the noise map seeded by the image's CRC-32 continued with `salt`.

    As `noise_maps` with another seed per image; the markers' flat pixel
    indices (evidence first) are given, so only their means are computed.
    """
    hits = 0
    for crc, pixels in zip(image_crcs, marker_pixels):
        noise = np.random.default_rng(zlib.crc32(salt.to_bytes(4, "little"), crc)).random(shape, dtype=np.float32)
        means = [noise.ravel()[p].astype(np.float64).mean() for p in pixels]
        hits += means[0] > max(means[1:])
    return hits / len(image_crcs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="validation images per data seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data seeds")
    parser.add_argument("--salts", type=int, default=40, help="salted noise maps per data seed")
    args = parser.parse_args(argv)
    objects = markers.MarkersConfig().objects_per_image
    start = time.perf_counter()
    cache, pooled = {}, collections.defaultdict(list)
    for seed in args.seeds:
        images, parts, drawn = draw(seed, args.images)
        counts = pixel_counts(parts, objects)
        lost = int((counts != drawn).sum())
        evidence = collections.Counter(counts[:, 0].tolist())
        decoys = collections.Counter(counts[:, 1:].ravel().tolist())
        print(f"seed {seed}: {args.images} images; marker pixels lost to overlap or clipping: {lost}")
        print(f"  evidence pixel counts {dict(sorted(evidence.items()))}; "
              f"decoys' (x{objects - 1}) {dict(sorted(decoys.items()))}")
        small_evidence = np.mean(counts[:, 0] <= 4)
        small_decoy = np.mean(counts[:, 1:] <= 4)
        print(f"  small (<= 4 px) share: evidence {small_evidence:.3f}, decoys {small_decoy:.3f}")
        chance = np.array([cache.setdefault(tuple(c), first_probability(c)) for c in counts.tolist()])
        first = evidence_among_markers(noise_maps(images), parts)[2]
        hits = int(first.sum())
        crcs = [zlib.crc32(image.astype(np.float32).tobytes()) for image in images]
        pixels = [[np.flatnonzero(p == 2 * k + 1) for k in range(objects)] for p in parts]
        salted = np.array([salted_noise_first(crcs, pixels, images.shape[1:3], s) for s in range(1, args.salts + 1)])
        p_value = poisson_binomial_test(hits, chance)
        z = (hits - chance.sum()) / np.sqrt((chance * (1 - chance)).sum())
        print(f"  exact chance of decoy_first {chance.mean():.4f} (per image {chance.min():.3f}-{chance.max():.3f}); "
              f"noise map {hits / len(first):.3f} = {hits} hits, z {z:+.2f}, p {p_value:.3f}; "
              f"{len(set(crcs))} distinct CRC-32 seeds", flush=True)
        if args.salts:
            print(f"  salted noise over {args.salts} salts: mean {salted.mean():.4f}, sd {salted.std(ddof=1):.4f} "
              f"(binomial sd {np.sqrt((chance * (1 - chance)).sum()) / len(chance):.4f}), "
                  f"range {salted.min():.3f}-{salted.max():.3f}", flush=True)
        pooled["chance"].append(chance)
        pooled["hits"].append(hits)
        pooled["salted"].append(salted - chance.mean())
    if len(args.seeds) > 1:
        chance, hits = np.concatenate(pooled["chance"]), sum(pooled["hits"])
        z = (hits - chance.sum()) / np.sqrt((chance * (1 - chance)).sum())
        print(f"pooled: exact chance {chance.mean():.4f}, noise map {hits / len(chance):.4f} = {hits} hits of "
              f"{len(chance)}, z {z:+.2f}, p {poisson_binomial_test(hits, chance):.3f}"
              + (f"; salted minus exact chance {np.concatenate(pooled['salted']).mean():+.4f}" if args.salts else ""))
    print(f"{len(cache)} distinct pixel-count triples; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
