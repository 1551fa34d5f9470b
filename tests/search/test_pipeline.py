"""search.pipeline: the process's pipeline built from settings."""

from search.pipeline import detector_load, search_config
from vision.detect import NoDetector


def test_the_nanodet_size_setting_reaches_the_detector(settings, monkeypatch):
    # Given a deployment that runs NanoDet at 320 px
    settings.SEARCH_DETECTOR, settings.SEARCH_NANODET_SIZE = "nanodet", 320
    built = []

    def make_detector(name, **options):
        built.append((name, options))
        return NoDetector()

    monkeypatch.setattr("vision.detect.make_detector", make_detector)
    detector_load.cache_clear()
    # When the process builds its detector
    config = search_config()
    detector_load(config.detector, **config.detector_options())
    detector_load.cache_clear()
    # Then NanoDet is asked for that input size
    assert built == [("nanodet", {"input_size": 320})]
