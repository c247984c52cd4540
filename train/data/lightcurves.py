"""What the sources emit: colours and parametric light curves of the four classes.

Fluxes are in the PLAsTiCC ``FLUXCAL`` unit: AB magnitude ``m`` has flux
``10 ** (-0.4 * (m - 27.5))``.  Colours come from simple spectra evaluated at a
band's effective wavelength (blackbodies for stars and supernovae, a power law
for AGN, a smooth Sbc-like template for host galaxies); redshift moves the band
to the rest frame and stretches time by ``1 + z``.

Every model is a frozen dataclass with a ``draw`` class method (parameters from
a :class:`numpy.random.Generator`) and a pure ``flux(mjd, wavelength)`` method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CLASSES",
    "ZEROPOINT",
    "Agn",
    "EclipsingBinary",
    "Flare",
    "RRLyrae",
    "Supernova",
    "blackbody_colour",
    "distance_modulus",
    "flux_to_mag",
    "galaxy_colour",
    "kpc_per_arcsec",
    "mag_to_flux",
]

#: The paper's 4-class task.
CLASSES: tuple[str, ...] = ("AGN", "SNIa", "SNOther", "Variable")
#: AB magnitude of unit flux (PLAsTiCC FLUXCAL).
ZEROPOINT = 27.5
#: Wavelength (Angstrom) at which colours are zero.
REFERENCE_WAVELENGTH = 6200.0

_HC_OVER_K = 1.4387769e8  # h c / k_B in Angstrom Kelvin


def mag_to_flux(mag: ArrayLike) -> NDArray[np.float64]:
    """Flux (FLUXCAL) of AB magnitudes ``mag`` (any shape, float64)."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - ZEROPOINT))


def flux_to_mag(flux: ArrayLike) -> NDArray[np.float64]:
    """AB magnitude of positive fluxes (any shape, float64); NaN where flux <= 0."""
    flux = np.asarray(flux, dtype=np.float64)
    positive = flux > 0
    return np.where(positive, ZEROPOINT - 2.5 * np.log10(np.where(positive, flux, 1.0)), np.nan)


def blackbody_colour(wavelength: ArrayLike, temperature: ArrayLike) -> NDArray[np.float64]:
    """AB magnitude of a blackbody at ``wavelength`` minus that at 6200 Angstrom.

    Parameters
    ----------
    wavelength : array_like, Angstrom
    temperature : array_like, Kelvin, broadcastable with ``wavelength``

    Returns
    -------
    ndarray, float64, broadcast shape
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    temperature = np.asarray(temperature, dtype=np.float64)

    def log_bnu(lam: NDArray[np.float64]) -> NDArray[np.float64]:
        # B_nu ~ nu^3 / (exp(h nu / k T) - 1), nu ~ 1 / lambda
        return -3.0 * np.log10(lam) - np.log10(np.expm1(_HC_OVER_K / (lam * temperature)))

    return -2.5 * (log_bnu(wavelength) - log_bnu(np.float64(REFERENCE_WAVELENGTH)))


# Rest-frame AB colour of an Sbc-like galaxy (Angstrom, mag relative to 6200 A):
# blue UV, the 4000 A break, flat in the red.
_GALAXY_WAVELENGTH = np.array([1000, 2000, 3000, 3700, 4000, 4500, 5500, 6200, 8000, 10000, 15000, 25000.0])
_GALAXY_COLOUR = np.array([4.0, 2.6, 2.0, 1.6, 1.2, 0.7, 0.3, 0.0, -0.3, -0.5, -0.7, -0.8])


def galaxy_colour(rest_wavelength: ArrayLike) -> NDArray[np.float64]:
    """Rest-frame AB colour (mag relative to 6200 A) of an Sbc-like galaxy; shape of input."""
    return np.interp(np.log(np.asarray(rest_wavelength, dtype=np.float64)),
                     np.log(_GALAXY_WAVELENGTH), _GALAXY_COLOUR)


@lru_cache(maxsize=1)
def _cosmology_table() -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Redshift grid, distance modulus and kpc per arcsec (flat LCDM, H0 = 70, Om = 0.3)."""
    from astropy.cosmology import FlatLambdaCDM

    cosmology = FlatLambdaCDM(H0=70.0, Om0=0.3)
    z = np.geomspace(1e-3, 5.0, 600)
    return (z, np.asarray(cosmology.distmod(z).value, dtype=np.float64),
            np.asarray(cosmology.kpc_proper_per_arcmin(z).value, dtype=np.float64) / 60.0)


def distance_modulus(z: ArrayLike) -> NDArray[np.float64]:
    """Distance modulus (mag) at redshift ``z`` (0.001 .. 5), flat LCDM H0 = 70, Om = 0.3."""
    grid, distmod, _ = _cosmology_table()
    return np.interp(np.log(np.asarray(z, dtype=np.float64)), np.log(grid), distmod)


def kpc_per_arcsec(z: ArrayLike) -> NDArray[np.float64]:
    """Proper kpc per arcsec at redshift ``z`` (0.001 .. 5), same cosmology."""
    grid, _, scale = _cosmology_table()
    return np.interp(np.log(np.asarray(z, dtype=np.float64)), np.log(grid), scale)


def _as_float(values: ArrayLike) -> NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def _bazin(dt: NDArray[np.float64], tau_rise: float | NDArray[np.float64],
           tau_fall: float | NDArray[np.float64]) -> NDArray[np.float64]:
    """Bazin shape normalised to a peak of 1; ``dt`` is time since the peak."""
    # The peak of exp(-x/tf) / (1 + exp(-x/tr)) lies at x* = tr ln((tf - tr) / tr).
    shift = tau_rise * np.log((tau_fall - tau_rise) / tau_rise)
    x = dt + shift

    def shape(u: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.exp(-u / tau_fall - np.logaddexp(0.0, -u / tau_rise))

    return shape(x) / shape(np.broadcast_to(shift, np.shape(x)))


SupernovaKind = Literal["Ia", "II-P", "Ibc", "IIn", "SLSN"]

# Per subtype: peak absolute mag (mean, sd) at 4400 A rest, rise and fall times (rest-frame
# days, mean, sd), how much slower the fall is per 1000 A redder, photospheric temperature,
# UV line-blanketing drop (mag below 4000 A), red secondary-bump amplitude, plateau length.
_SN_PARAMETERS: dict[str, dict[str, tuple[float, float] | float]] = {
    "Ia": dict(abs_mag=(-19.3, 0.15), rise=(3.0, 0.4), fall=(20.0, 2.5), fall_slope=0.25,
               temperature=11000.0, uv_drop=1.0, bump=0.45, plateau=0.0),
    "II-P": dict(abs_mag=(-16.9, 0.8), rise=(4.0, 1.0), fall=(150.0, 30.0), fall_slope=0.3,
                 temperature=8000.0, uv_drop=0.0, bump=0.0, plateau=100.0),
    "Ibc": dict(abs_mag=(-17.6, 0.7), rise=(5.0, 1.5), fall=(18.0, 4.0), fall_slope=0.2,
                temperature=6500.0, uv_drop=1.2, bump=0.0, plateau=0.0),
    "IIn": dict(abs_mag=(-18.8, 0.9), rise=(15.0, 5.0), fall=(70.0, 20.0), fall_slope=0.1,
                temperature=10000.0, uv_drop=0.0, bump=0.0, plateau=0.0),
    "SLSN": dict(abs_mag=(-21.0, 0.5), rise=(25.0, 6.0), fall=(60.0, 15.0), fall_slope=0.15,
                 temperature=12000.0, uv_drop=0.5, bump=0.0, plateau=0.0),
}
#: Subtypes making up the SNOther class, with their shares.
SN_OTHER_MIX: dict[str, float] = {"II-P": 0.45, "Ibc": 0.30, "IIn": 0.15, "SLSN": 0.10}


@dataclass(frozen=True)
class Supernova:
    """A Bazin-shaped supernova with wavelength-dependent fall and blackbody colours.

    Attributes
    ----------
    kind : {"Ia", "II-P", "Ibc", "IIn", "SLSN"}
    t0 : float
        MJD of the peak at 4400 A rest.
    z : float
        Redshift (time dilation, rest-frame wavelength, distance).
    abs_mag : float
        Peak absolute AB magnitude at 4400 A rest.
    tau_rise, tau_fall : float
        Rest-frame rise and fall times (days) at 4400 A.
    fall_slope : float
        Fractional change of ``tau_fall`` per 1000 A of rest wavelength.
    temperature : float
        Blackbody temperature of the colours (K).
    uv_drop : float
        Extra magnitudes of suppression below 4000 A rest (line blanketing).
    bump : float
        Amplitude (fraction of peak) of the red secondary maximum 28 rest-frame days on.
    plateau : float
        Rest-frame days after which a type II-P plateau drops to its tail (0: none).
    """

    kind: SupernovaKind
    t0: float
    z: float
    abs_mag: float
    tau_rise: float
    tau_fall: float
    fall_slope: float
    temperature: float
    uv_drop: float
    bump: float
    plateau: float

    @classmethod
    def draw(cls, rng: np.random.Generator, kind: SupernovaKind, *, t0: float, z: float) -> Supernova:
        """Draw the parameters of one supernova of subtype ``kind`` peaking at ``t0``."""
        p = _SN_PARAMETERS[kind]
        stretch = rng.normal(1.0, 0.1) if kind == "Ia" else 1.0
        tau_rise = max(1.0, rng.normal(*p["rise"]) * stretch)
        tau_fall = max(2.0 * tau_rise, rng.normal(*p["fall"]) * stretch)
        # Broader SNe Ia are brighter (the Phillips relation).
        abs_mag = rng.normal(*p["abs_mag"]) - 1.5 * (stretch - 1.0)
        plateau = rng.normal(p["plateau"], 15.0) if p["plateau"] else 0.0
        return cls(kind=kind, t0=float(t0), z=float(z), abs_mag=float(abs_mag), tau_rise=float(tau_rise),
                   tau_fall=float(tau_fall), fall_slope=float(p["fall_slope"]),
                   temperature=float(p["temperature"] * rng.normal(1.0, 0.05)), uv_drop=float(p["uv_drop"]),
                   bump=float(p["bump"]), plateau=float(max(plateau, 0.0)))

    def peak_mag(self, wavelength: ArrayLike) -> NDArray[np.float64]:
        """Apparent peak AB magnitude in bands of effective ``wavelength`` (Angstrom)."""
        rest = _as_float(wavelength) / (1.0 + self.z)
        colour = blackbody_colour(rest, self.temperature) - blackbody_colour(4400.0, self.temperature)
        colour = colour + self.uv_drop * np.clip((4000.0 - rest) / 1000.0, 0.0, 1.0)
        return self.abs_mag + distance_modulus(self.z) - 2.5 * math.log10(1.0 + self.z) + colour

    def flux(self, mjd: ArrayLike, wavelength: ArrayLike) -> NDArray[np.float64]:
        """Flux at epochs ``mjd`` (T,) in bands of effective ``wavelength`` (T,), float64 (T,)."""
        mjd, wavelength = _as_float(mjd), _as_float(wavelength)
        dilation = 1.0 + self.z
        rest = wavelength / dilation
        dt = (mjd - self.t0) / dilation
        tau_fall = self.tau_fall * np.clip(1.0 + self.fall_slope * (rest - 4400.0) / 1000.0, 0.3, None)
        tau_fall = np.maximum(tau_fall, 1.5 * self.tau_rise)
        shape = _bazin(dt, self.tau_rise, tau_fall)
        if self.bump:
            weight = self.bump * np.clip((rest - 6000.0) / 2000.0, 0.0, 1.0)
            shape = shape + weight * _bazin(dt - 28.0, 5.0, 20.0)
        if self.plateau:
            shape = shape * (0.08 + 0.92 / (1.0 + np.exp(np.clip((dt - self.plateau) / 5.0, -50, 50))))
        return mag_to_flux(self.peak_mag(wavelength)) * shape


@dataclass(frozen=True)
class Agn:
    """An AGN: power-law colours and a damped random walk common to all bands.

    Attributes
    ----------
    z : float
    abs_mag : float
        Mean absolute AB magnitude at 4000 A rest.
    alpha_nu : float
        Spectral index, ``f_nu ~ nu ** alpha_nu``.
    tau : float
        Rest-frame damping time (days).
    sf_inf : float
        Asymptotic structure function (mag) at 4000 A rest; bluer light varies more.
    seed : int
        Seed of the random walk (the flux is a pure function of the epochs).
    """

    z: float
    abs_mag: float
    alpha_nu: float
    tau: float
    sf_inf: float
    seed: int

    @classmethod
    def draw(cls, rng: np.random.Generator, *, z: float) -> Agn:
        """Draw one AGN at redshift ``z``."""
        return cls(z=float(z), abs_mag=float(rng.normal(-22.5, 1.2)), alpha_nu=float(rng.normal(-0.5, 0.3)),
                   tau=float(np.exp(rng.normal(math.log(200.0), 0.5))),
                   sf_inf=float(np.exp(rng.normal(math.log(0.22), 0.35))), seed=int(rng.integers(2**63)))

    def mean_mag(self, wavelength: ArrayLike) -> NDArray[np.float64]:
        """Mean apparent AB magnitude in bands of effective ``wavelength``."""
        rest = _as_float(wavelength) / (1.0 + self.z)
        colour = 2.5 * self.alpha_nu * np.log10(rest / 4000.0)
        forest = 2.0 * np.clip((1216.0 - rest) / 300.0, 0.0, 1.0)  # Lyman-alpha forest
        return self.abs_mag + distance_modulus(self.z) - 2.5 * math.log10(1.0 + self.z) + colour + forest

    def flux(self, mjd: ArrayLike, wavelength: ArrayLike) -> NDArray[np.float64]:
        """Flux at epochs ``mjd`` (T,) in bands of ``wavelength`` (T,), float64 (T,)."""
        mjd, wavelength = _as_float(mjd), _as_float(wavelength)
        times, inverse = np.unique(mjd, return_inverse=True)
        rng = np.random.default_rng(self.seed)
        sigma = self.sf_inf / math.sqrt(2.0)  # stationary standard deviation
        walk = np.empty(times.shape[0])
        walk[0] = rng.normal(0.0, sigma)
        decay = np.exp(-np.diff(times) / (self.tau * (1.0 + self.z)))
        kicks = rng.normal(0.0, 1.0, times.shape[0] - 1) * sigma * np.sqrt(1.0 - decay**2)
        for i in range(1, times.shape[0]):  # Ornstein-Uhlenbeck recursion, exact for any gaps
            walk[i] = walk[i - 1] * decay[i - 1] + kicks[i - 1]
        rest = wavelength / (1.0 + self.z)
        delta = walk[inverse] * (rest / 4000.0) ** -0.5
        return mag_to_flux(self.mean_mag(wavelength) + delta)


def _rrlyrae_template() -> NDArray[np.float64]:
    """Smoothed asymmetric sawtooth on 512 phases: 0 at maximum light, 1 at minimum."""
    phase = np.arange(512) / 512.0
    rise = 0.15
    saw = np.where(phase < 1.0 - rise, phase / (1.0 - rise), (1.0 - phase) / rise)
    spectrum = np.fft.rfft(saw)
    spectrum[6:] = 0.0  # keep five harmonics, as fitted RRab templates do
    smooth = np.fft.irfft(spectrum, n=512)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min())


_RRL_TEMPLATE = _rrlyrae_template()


@dataclass(frozen=True)
class RRLyrae:
    """A pulsating RR Lyrae star (RRab): fast rise, slow decline, bluer is larger.

    Attributes
    ----------
    period : float
        Days.
    phase0 : float
        Phase (0..1) at MJD 0.
    mean_mag : float
        Mean AB magnitude at 6200 A.
    amplitude : float
        Peak-to-peak amplitude (mag) at 4800 A.
    temperature : float
        Mean temperature (K) of the colours.
    """

    period: float
    phase0: float
    mean_mag: float
    amplitude: float
    temperature: float

    @classmethod
    def draw(cls, rng: np.random.Generator, *, mag_range: tuple[float, float]) -> RRLyrae:
        """Draw one RR Lyrae whose mean magnitude lies in ``mag_range``."""
        return cls(period=float(rng.uniform(0.45, 0.75)), phase0=float(rng.random()),
                   mean_mag=float(rng.uniform(*mag_range)), amplitude=float(rng.uniform(0.6, 1.1)),
                   temperature=float(rng.uniform(6200.0, 7200.0)))

    def flux(self, mjd: ArrayLike, wavelength: ArrayLike) -> NDArray[np.float64]:
        """Flux at epochs ``mjd`` (T,) in bands of ``wavelength`` (T,), float64 (T,)."""
        mjd, wavelength = _as_float(mjd), _as_float(wavelength)
        phase = np.mod(mjd / self.period + self.phase0, 1.0)
        shape = np.interp(phase, np.arange(513) / 512.0, np.append(_RRL_TEMPLATE, _RRL_TEMPLATE[0]))
        amplitude = self.amplitude * (wavelength / 4800.0) ** -0.9
        mag = self.mean_mag + blackbody_colour(wavelength, self.temperature) + amplitude * (shape - 0.5)
        return mag_to_flux(mag)


@dataclass(frozen=True)
class EclipsingBinary:
    """A detached-to-contact eclipsing binary: two Gaussian eclipses and ellipsoidal light.

    Attributes
    ----------
    period : float
        Orbital period (days).
    phase0 : float
        Phase at MJD 0.
    mean_mag : float
        Out-of-eclipse AB magnitude at 6200 A.
    depth : float
        Primary eclipse depth (mag).
    width : float
        Eclipse width (sigma, in phase).
    temperatures : tuple of float
        Primary and secondary temperatures (K); the secondary eclipse depth
        follows their surface-brightness ratio in each band.
    ellipsoidal : float
        Semi-amplitude (mag) of the ellipsoidal modulation.
    """

    period: float
    phase0: float
    mean_mag: float
    depth: float
    width: float
    temperatures: tuple[float, float]
    ellipsoidal: float

    @classmethod
    def draw(cls, rng: np.random.Generator, *, mag_range: tuple[float, float]) -> EclipsingBinary:
        """Draw one eclipsing binary whose mean magnitude lies in ``mag_range``."""
        hot = rng.uniform(5000.0, 10000.0)
        return cls(period=float(np.exp(rng.uniform(math.log(0.3), math.log(10.0)))), phase0=float(rng.random()),
                   mean_mag=float(rng.uniform(*mag_range)), depth=float(rng.uniform(0.2, 1.0)),
                   width=float(rng.uniform(0.02, 0.06)), temperatures=(float(hot), float(hot * rng.uniform(0.5, 1.0))),
                   ellipsoidal=float(rng.uniform(0.0, 0.1)))

    def flux(self, mjd: ArrayLike, wavelength: ArrayLike) -> NDArray[np.float64]:
        """Flux at epochs ``mjd`` (T,) in bands of ``wavelength`` (T,), float64 (T,)."""
        mjd, wavelength = _as_float(mjd), _as_float(wavelength)
        phase = np.mod(mjd / self.period + self.phase0, 1.0)
        hot, cool = self.temperatures
        # Surface-brightness ratio of the two stars in each band sets the secondary depth.
        ratio = np.expm1(_HC_OVER_K / (wavelength * hot)) / np.expm1(_HC_OVER_K / (wavelength * cool))
        primary = np.exp(-0.5 * (np.minimum(phase, 1.0 - phase) / self.width) ** 2)
        secondary = np.exp(-0.5 * ((phase - 0.5) / self.width) ** 2)
        dmag = self.depth * (primary + ratio * secondary)
        dmag = dmag + self.ellipsoidal * (1.0 - np.cos(4.0 * np.pi * phase))
        return mag_to_flux(self.mean_mag + blackbody_colour(wavelength, hot) + dmag)


@dataclass(frozen=True)
class Flare:
    """A flaring M dwarf: a cool quiescent star and hot (10,000 K) flares.

    Attributes
    ----------
    mean_mag : float
        Quiescent AB magnitude at 6200 A.
    temperature : float
        Quiescent temperature (K).
    times : tuple of float
        Flare start MJDs.
    amplitudes : tuple of float
        Flare peak flux at 6200 A, as a multiple of the quiescent flux there.
    decays : tuple of float
        Exponential decay times (days).
    """

    mean_mag: float
    temperature: float
    times: tuple[float, ...]
    amplitudes: tuple[float, ...]
    decays: tuple[float, ...]

    FLARE_TEMPERATURE = 10000.0

    @classmethod
    def draw(cls, rng: np.random.Generator, *, mjd: NDArray[np.float64], mag_range: tuple[float, float]) -> Flare:
        """Draw one flare star, with flares caught by ``1 + Poisson(1.5)`` of the epochs ``mjd``.

        A star enters a variability catalog because some visits caught it
        flaring, so flare start times are drawn just before randomly chosen
        epochs rather than uniformly in time.
        """
        count = min(1 + int(rng.poisson(1.5)), mjd.shape[0])
        decays = rng.uniform(0.02, 0.3, count)
        caught = rng.choice(mjd, size=count, replace=False)
        times = caught - rng.uniform(0.0, 1.5, count) * decays
        amplitudes = np.exp(rng.uniform(math.log(0.3), math.log(5.0), count))
        return cls(mean_mag=float(rng.uniform(*mag_range)), temperature=float(rng.uniform(2800.0, 3600.0)),
                   times=tuple(float(t) for t in times), amplitudes=tuple(float(a) for a in amplitudes),
                   decays=tuple(float(d) for d in decays))

    def flux(self, mjd: ArrayLike, wavelength: ArrayLike) -> NDArray[np.float64]:
        """Flux at epochs ``mjd`` (T,) in bands of ``wavelength`` (T,), float64 (T,)."""
        mjd, wavelength = _as_float(mjd), _as_float(wavelength)
        quiescent = mag_to_flux(self.mean_mag + blackbody_colour(wavelength, self.temperature))
        hot = 10.0 ** (-0.4 * blackbody_colour(wavelength, self.FLARE_TEMPERATURE))
        since = mjd[:, None] - np.asarray(self.times)[None, :]
        decay = np.asarray(self.decays)[None, :]
        profile = np.where(since >= 0.0, np.exp(-np.clip(since, 0.0, None) / decay), 0.0)
        boost = profile @ np.asarray(self.amplitudes)
        return quiescent + mag_to_flux(self.mean_mag) * boost * hot
