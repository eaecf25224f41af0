from PIL import Image, ImageFilter

from imgpipe.params import QualityParams
from imgpipe.quality import FLAGS, flags, measure
from tests.imgpipe.test_near_duplicates import photo


def test_each_flag_fires_on_an_image_made_for_it_and_none_on_a_clean_photo():
    clean = photo(5)
    made = {
        "blurry": clean.filter(ImageFilter.GaussianBlur(4)),
        "too_dark": clean.point(lambda v: v // 10),
        "too_bright": clean.point(lambda v: 235 + v // 20),
        "low_information": Image.new("RGB", (128, 128), (90, 120, 60)),
        "extreme_aspect": clean.resize((512, 128)),
        "grayscale": clean.convert("L").convert("RGB"),
    }
    thresholds = QualityParams()
    assert flags(measure(clean), thresholds) == []
    for name, image in made.items():
        assert name in flags(measure(image), thresholds), (name, measure(image))
    assert set(made) == set(FLAGS)
    # A flat colour image is also blurry: it has no edge at all.
    assert flags(measure(made["low_information"]), thresholds)[:1] == ["blurry"]
