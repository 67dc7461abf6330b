"""Synthetic scenes: deterministic, and each modality behaves like its sensor (not a copy of another)."""

from __future__ import annotations

import numpy as np
import pytest

from datagen import synthetic as S

SHAPE = (256, 288)


@pytest.fixture(scope="module")
def terrain() -> S.Terrain:
    return S.make_terrain(SHAPE, np.random.default_rng(7))


def test_render_scene_is_deterministic_from_the_generator():
    a = S.render_scene(SHAPE, np.random.default_rng(3))
    b = S.render_scene(SHAPE, np.random.default_rng(3))
    c = S.render_scene(SHAPE, np.random.default_rng(4))
    for name in ("optical", "sar", "dem", "landcover"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.dem, c.dem)
    assert a.optical.shape == (4, *SHAPE) and a.optical.dtype == np.float32
    assert a.sar.shape == (2, *SHAPE) and a.sar.dtype == np.float32
    assert a.dem.shape == SHAPE and a.dem.dtype == np.float32


def test_values_are_physical(terrain):
    scene = S.render_scene(SHAPE, np.random.default_rng(3))
    assert 0 < scene.optical.min() and scene.optical.max() <= 1
    assert -40 < np.median(scene.sar[0]) < 0 and np.median(scene.sar[1]) < np.median(scene.sar[0])  # VH < VV
    relief = np.ptp(terrain.dem)
    assert 20 < relief < 800 and terrain.dem.min() > 0  # a 2.9 km scene gets part of the 800 m relief
    big = S.make_terrain((1024, 1024), np.random.default_rng(7))
    assert np.ptp(big.dem) > relief  # relief grows with the scene, so slopes stay realistic


def test_landscape_has_every_kind_of_cover():
    big = S.make_terrain((768, 768), np.random.default_rng(1))
    share = np.bincount(big.landcover.ravel(), minlength=len(S.CLASS_NAMES)) / big.landcover.size
    assert share[S.WATER] > 0.001 and share[S.ROAD] > 0.001 and share[S.URBAN] > 0.0005
    assert 0.2 < share[S.FOREST] < 0.6 and share[S.CROP] > 0.1
    # Fields are parcels with sharp edges: one class and one phenology per parcel.
    fields = np.isin(big.landcover, (S.CROP, S.GRASS, S.BARE))
    same_parcel = (big.parcel[:, 1:] == big.parcel[:, :-1]) & fields[:, 1:] & fields[:, :-1]
    assert (big.landcover[:, 1:] == big.landcover[:, :-1])[same_parcel].mean() == 1.0


def test_speckle_has_gamma_statistics():
    rng = np.random.default_rng(0)
    flat = np.full((1, 256, 256), 0.1, dtype=np.float32)
    looks = 4.4
    linear = 10 ** (S.speckle_db(flat, looks, rng) / 10) / 0.1
    assert abs(linear.mean() - 1) < 0.01
    assert abs(linear.mean() ** 2 / linear.var() - looks) < 0.2  # equivalent number of looks
    assert np.array_equal(S.speckle_db(flat, 0, rng), np.full_like(flat, -10.0))  # looks 0: no speckle


def test_sar_water_is_dark_and_slopes_facing_the_radar_are_bright(terrain):
    geometry = S.SarGeometry(look_azimuth=78.0, incidence=37.0)
    clean_db = 10 * np.log10(S.sar_sigma0(terrain, geometry))
    water = terrain.landcover == S.WATER
    assert water.sum() > 50
    assert np.median(clean_db[0][water]) < np.median(clean_db[0][~water]) - 8
    cos_li = S.cos_local_incidence(terrain.dem, terrain.pixel_size, geometry)
    forest = terrain.landcover == S.FOREST
    assert np.corrcoef(cos_li[forest], clean_db[0][forest])[0, 1] > 0.4


def test_optical_follows_sun_hillshade(terrain):
    light = S.Illumination(sun_azimuth=150.0, sun_elevation=40.0)
    optical = S.render_optical(terrain, light, np.random.default_rng(0))
    shade = S.hillshade(terrain.dem, terrain.pixel_size, light.sun_azimuth, light.sun_elevation)
    forest = terrain.landcover == S.FOREST
    assert np.corrcoef(shade[forest], optical[3][forest])[0, 1] > 0.4
    # Same landscape, other modality: related through geometry, far from a copy.
    sar = 10 * np.log10(S.sar_sigma0(terrain, S.SarGeometry()))
    assert abs(np.corrcoef(optical[2].ravel(), sar[0].ravel())[0, 1]) < 0.6


def test_clouds_cover_about_what_is_asked(terrain):
    alpha = S.cloud_opacity(SHAPE, 10.0, 0.05, np.random.default_rng(0))
    assert 0.03 < (alpha > 0).mean() <= 0.051
    cloudy = S.render_optical(terrain, S.Illumination(cloud_cover=0.05), np.random.default_rng(0))
    clear = S.render_optical(terrain, S.Illumination(), np.random.default_rng(0))
    assert cloudy[0].max() > 0.4 > clear[0].max()  # clouds are bright in blue, the landscape is not


def test_render_scene_refuses_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        S.render_scene((4, 100), np.random.default_rng(0))
