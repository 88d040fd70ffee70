"""Rebuild the embedded image calibration set: ``prune_compensate/data/images/*.jpg`` and
``prune_compensate/data/default_calibration_images.jsonl``.

Why: a vision-language model calibrated on text alone is fitted to text statistics only, and its
compensation may be worse than none on image prompts. So the default calibration of a VLM mixes in
image + text samples, which must ship with the package to work offline. The photos are scikit-image's
sample images that are public domain or CC0 (licence of each in the JSONL and in
``data/images/LICENSES.md``), centre-cropped to squares of 224 px and stored as JPEG. The prompts are written
for each image: a caption, a question and a description, in the chat style VLMs are tuned on.

    pip install scikit-image
    python tools/make_default_images.py [SKIMAGE_DATA_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

# file in skimage/data → (name, licence, author/source, prompts)
IMAGES: dict[str, tuple[str, str, str, list[str]]] = {
    "astronaut.png": (
        "astronaut",
        "public domain",
        "NASA (portrait of astronaut Eileen Collins)",
        [
            "A portrait of an astronaut in an orange flight suit in front of an American flag.",
            "Question: What is the person in this photo wearing? Answer: an orange astronaut flight suit.",
            "Describe the image. A smiling woman astronaut poses beside a flag and a model of the space shuttle.",
            "Who would wear a suit like the one in this picture, and why?",
            "The photo shows a NASA crew portrait: the astronaut holds her helmet, with the flag behind her.",
        ],
    ),
    "chelsea.png": (
        "cat",
        "CC0",
        "Stefan van der Walt",
        [
            "A tabby cat with green eyes looks to the side.",
            "Question: What animal is in the picture? Answer: a striped tabby cat.",
            "Describe the image. A close-up of a ginger and grey cat's face, its whiskers and ears in sharp focus.",
            "Is the cat in this photo looking at the camera or away from it?",
            "The photo shows the head of a domestic cat against a blurred background.",
        ],
    ),
    "coffee.png": (
        "coffee",
        "CC0",
        "Rachel Michetti",
        [
            "A cup of coffee on a saucer, seen from above.",
            "Question: What drink is in the cup? Answer: coffee with a light crema on top.",
            "Describe the image. A white cup of coffee stands on a saucer with a spoon on a wooden table.",
            "How many cups are on the table in this photo?",
            "The photo shows a hot drink served in a porcelain cup, ready to be drunk.",
        ],
    ),
    "rocket.jpg": (
        "rocket",
        "public domain",
        "SpaceX (launch of DSCOVR on Falcon 9)",
        [
            "A rocket lifts off from its launch pad in a cloud of smoke and fire.",
            "Question: What is happening in this photo? Answer: a rocket launch.",
            "Describe the image. A white Falcon 9 rocket rises above the launch tower, trailing a bright flame.",
            "What kind of vehicle is shown, and where is it going?",
            "The photo shows a space launch: the rocket has just cleared the tower against the sky.",
        ],
    ),
    "hubble_deep_field.jpg": (
        "galaxies",
        "public domain",
        "NASA / ESA Hubble Space Telescope",
        [
            "Hundreds of distant galaxies of many shapes and colours on a black sky.",
            "Question: What are the bright spots in this image? Answer: galaxies, billions of light years away.",
            "Describe the image. A deep-field telescope picture full of spiral and elliptical galaxies.",
            "Which telescope could take a picture like this one?",
            "The picture shows a small patch of the night sky observed for a very long exposure.",
        ],
    ),
    "horse.png": (
        "horse",
        "CC0",
        "Andreas Preuss",
        [
            "The black silhouette of a horse on a white background.",
            "Question: What animal does this shape show? Answer: a horse, seen from the side.",
            "Describe the image. A dark outline of a standing horse with its legs and tail, no other detail.",
            "Is this a photograph or a drawn silhouette?",
        ],
    ),
    "camera.png": (
        "cameraman",
        "CC0",
        "Lav Varshney",
        [
            "A black and white photo of a man with a camera on a tripod.",
            "Question: What is the man doing? Answer: taking a photograph with a camera on a tripod.",
            "Describe the image. A grayscale picture of a photographer in a dark coat standing on a lawn.",
            "What is in the background behind the photographer?",
        ],
    ),
    "retina.jpg": (
        "retina",
        "CC0",
        "Häggström, Mikael (2014), fundus photograph",
        [
            "A fundus photograph of a human retina with its branching blood vessels.",
            "Question: What part of the body does this image show? Answer: the retina at the back of the eye.",
            "Describe the image. An orange-red disc with dark red blood vessels spreading from a bright spot.",
            "What might an eye doctor look for in this picture?",
        ],
    ),
    "grass.png": (
        "grass",
        "CC0",
        "scikit-image texture set",
        [
            "A close-up texture of grass blades.",
            "Question: What surface is shown? Answer: grass.",
            "Describe the image. A grayscale pattern of many thin, overlapping leaves of grass.",
        ],
    ),
    "brick.png": (
        "brick wall",
        "CC0",
        "scikit-image texture set",
        [
            "A brick wall seen straight on.",
            "Question: What is this wall made of? Answer: bricks and mortar.",
            "Describe the image. Rows of rectangular bricks separated by lines of mortar, in grayscale.",
        ],
    ),
    "gravel.png": (
        "gravel",
        "CC0",
        "scikit-image texture set",
        [
            "A close-up of gravel: many small stones.",
            "Question: What does the ground in this picture consist of? Answer: small pebbles.",
            "Describe the image. A grayscale texture of rounded stones of different sizes.",
        ],
    ),
}

MAX_SIDE = 224  # pixels, square


def main(source: str | None = None) -> None:
    if source is None:
        import skimage.data

        source = str(Path(skimage.data.__file__).parent)
    data = Path(__file__).resolve().parents[1] / "prune_compensate" / "data"
    out = data / "images"
    out.mkdir(parents=True, exist_ok=True)
    lines, licences = [], ["# Embedded calibration images", "", "From scikit-image's sample data.", ""]
    for file, (name, licence, author, prompts) in IMAGES.items():
        with Image.open(Path(source) / file) as image:
            image = image.convert("RGB")
            side = min(image.size)  # square: every processor batches them, whatever its resizing rule
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side)).resize((MAX_SIDE, MAX_SIDE))
            target = f"{name.replace(' ', '_')}.jpg"
            image.save(out / target, quality=85)
        licences.append(f"- `{target}`: {licence}, {author}")
        for prompt in prompts:
            record = {"text": prompt, "images": [f"images/{target}"], "licence": licence, "source": author}
            lines.append(json.dumps(record, ensure_ascii=False))
    (data / "default_calibration_images.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "LICENSES.md").write_text("\n".join(licences) + "\n", encoding="utf-8")
    print(f"{len(lines)} image samples, {len(IMAGES)} images written to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
