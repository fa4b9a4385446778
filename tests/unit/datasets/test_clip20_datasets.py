"""The twelve datasets the 14- and 20-task CLIP benchmarks add: task lists, class names, templates and split
sizes against the TALL masks authors' code, and each loader reading its stand-in in the real layout.

Authors' lists transcribed below from nik-dim/tall_masks at commit d10af8b21383322367fb35474bd9cd0f9ebe9ecf:
``src/utils/variables_and_paths.py`` (ALL_DATASETS), ``src/datasets/templates.py``, ``src/datasets/
{flowers102,pcam,fer2013,cifar10}.py`` (class lists), ``src/datasets/registry.py`` (val split; its MNISTVal
check); class lists the authors take from torchvision's ``classes`` are torchvision's (CIFAR100 ``meta``,
Food101 ``meta`` keys sorted, OxfordIIITPet title-cased breeds, STL10 ``class_names.txt``, FashionMNIST,
KMNIST, EMNIST ``digits``, RenderedSST2); split sizes are those of torchvision's train / test sets.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from simo_merge.datasets import DATASETS, build_dataset
from simo_merge.datasets import clip_templates as ct
from simo_merge.datasets.clip8 import CLIP8_TASKS, CLIP14_TASKS, CLIP20_TASKS, train_val_split
from simo_merge.datasets.clip_extra import read_cifar_batch
from tests.helpers.clip20_fixture import N_TEST, N_TRAIN, WRITERS, label, stand_in_image, write_clip20_data

ADDED = tuple(t for t in CLIP20_TASKS if t not in CLIP8_TASKS)

# ----------------------------------------------------------------------------------- authors' lists
AUTHORS_ALL_DATASETS = [
    "Cars", "DTD", "EuroSAT", "GTSRB", "MNIST", "RESISC45", "SVHN", "SUN397", "STL10", "OxfordIIITPet",
    "Flowers102", "CIFAR100", "PCAM", "FER2013", "CIFAR10", "Food101", "FashionMNIST", "RenderedSST2",
    "EMNIST", "KMNIST",
]  # fmt: skip
FLOWERS102 = (
    "pink primrose|hard-leaved pocket orchid|canterbury bells|sweet pea|english marigold|tiger lily|"
    "moon orchid|bird of paradise|monkshood|globe thistle|snapdragon|colt's foot|king protea|"
    "spear thistle|yellow iris|globe flower|purple coneflower|peruvian lily|balloon flower|"
    "giant white arum lily|fire lily|pincushion flower|fritillary|red ginger|grape hyacinth|corn poppy|"
    "prince of wales feathers|stemless gentian|artichoke|sweet william|carnation|garden phlox|"
    "love in the mist|mexican aster|alpine sea holly|ruby-lipped cattleya|cape flower|great masterwort|"
    "siam tulip|lenten rose|barbeton daisy|daffodil|sword lily|poinsettia|bolero deep blue|wallflower|"
    "marigold|buttercup|oxeye daisy|common dandelion|petunia|wild pansy|primula|sunflower|pelargonium|"
    "bishop of llandaff|gaura|geranium|orange dahlia|pink and yellow dahlia|cautleya spicata|"
    "japanese anemone|black-eyed susan|silverbush|californian poppy|osteospermum|spring crocus|"
    "bearded iris|windflower|tree poppy|gazania|azalea|water lily|rose|thorn apple|morning glory|"
    "passion flower|lotus|toad lily|anthurium|frangipani|clematis|hibiscus|columbine|desert-rose|"
    "tree mallow|magnolia|cyclamen|watercress|canna lily|hippeastrum|bee balm|air plant|foxglove|"
    "bougainvillea|camellia|mallow|mexican petunia|bromelia|blanket flower|trumpet creeper|"
    "blackberry lily"
).split("|")

FOOD101 = (
    "apple_pie baby_back_ribs baklava beef_carpaccio beef_tartare beet_salad beignets bibimbap "
    "bread_pudding breakfast_burrito bruschetta caesar_salad cannoli caprese_salad carrot_cake ceviche "
    "cheese_plate cheesecake chicken_curry chicken_quesadilla chicken_wings chocolate_cake "
    "chocolate_mousse churros clam_chowder club_sandwich crab_cakes creme_brulee croque_madame cup_cakes "
    "deviled_eggs donuts dumplings edamame eggs_benedict escargots falafel filet_mignon fish_and_chips "
    "foie_gras french_fries french_onion_soup french_toast fried_calamari fried_rice frozen_yogurt "
    "garlic_bread gnocchi greek_salad grilled_cheese_sandwich grilled_salmon guacamole gyoza hamburger "
    "hot_and_sour_soup hot_dog huevos_rancheros hummus ice_cream lasagna lobster_bisque "
    "lobster_roll_sandwich macaroni_and_cheese macarons miso_soup mussels nachos omelette onion_rings "
    "oysters pad_thai paella pancakes panna_cotta peking_duck pho pizza pork_chop poutine prime_rib "
    "pulled_pork_sandwich ramen ravioli red_velvet_cake risotto samosa sashimi scallops seaweed_salad "
    "shrimp_and_grits spaghetti_bolognese spaghetti_carbonara spring_rolls steak strawberry_shortcake "
    "sushi tacos takoyaki tiramisu tuna_tartare waffles"
).split()

CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange "
    "orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit "
    "raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel "
    "streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip "
    "turtle wardrobe whale willow_tree wolf woman worm"
).split()

PETS = (
    "Abyssinian|American Bulldog|American Pit Bull Terrier|Basset Hound|Beagle|Bengal|Birman|Bombay|"
    "Boxer|British Shorthair|Chihuahua|Egyptian Mau|English Cocker Spaniel|English Setter|"
    "German Shorthaired|Great Pyrenees|Havanese|Japanese Chin|Keeshond|Leonberger|Maine Coon|"
    "Miniature Pinscher|Newfoundland|Persian|Pomeranian|Pug|Ragdoll|Russian Blue|Saint Bernard|Samoyed|"
    "Scottish Terrier|Shiba Inu|Siamese|Sphynx|Staffordshire Bull Terrier|Wheaten Terrier|"
    "Yorkshire Terrier"
).split("|")

SHORT_CLASSNAMES = {
    "PCAM": ["lymph node", "lymph node containing metastatic tumor tissue"],
    "FER2013": [
        "['angry']", "['disgusted']", "['fearful']", "['happy', 'smiling']", "['sad', 'depressed']",
        "['surprised', 'shocked', 'spooked']", "['neutral', 'bored']",
    ],
    "CIFAR10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "STL10": ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"],
    "FashionMNIST": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "KMNIST": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "EMNIST": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    "RenderedSST2": ["negative", "positive"],
}  # fmt: skip

_CIFAR_TEMPLATES = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
    "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
    "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.",
]  # fmt: skip
AUTHORS_TEMPLATES = {
    "CIFAR10": _CIFAR_TEMPLATES,
    "CIFAR100": _CIFAR_TEMPLATES,
    "Food101": ["a photo of {}, a type of food."],
    "STL10": ["a photo of a {}.", "a photo of the {}."],
    "Flowers102": ["a photo of a {}, a type of flower."],
    "FER2013": [
        "a photo of a {} looking face.", "a photo of a face showing the emotion: {}.",
        "a photo of a face looking {}.", "a face that looks {}.", "they look {}.", "look at how {} they are.",
    ],
    "PCAM": ["this is a photo of {}"],
    "OxfordIIITPet": ["a photo of a {}, a type of pet."],
    "RenderedSST2": ["a {} review of a movie."],
    "EMNIST": ['a photo of the digit character: "{}".'],
    "FashionMNIST": ["a photo of a {}.", "a photo of the {}."],
    "KMNIST": ["a photo of the character {}."],
}  # fmt: skip

#: torchvision's (train, test) sizes of the sets the authors read; train / val = <Dataset>Val's parts
SIZES = {
    "Flowers102": (1020, 6149), "PCAM": (262144, 32768), "FER2013": (28709, 7178),
    "OxfordIIITPet": (3680, 3669), "STL10": (5000, 8000), "CIFAR100": (50000, 10000),
    "CIFAR10": (50000, 10000), "Food101": (75750, 25250), "FashionMNIST": (60000, 10000),
    "EMNIST": (240000, 40000), "KMNIST": (60000, 10000), "RenderedSST2": (6920, 1821),
}  # fmt: skip
#: (train part, val part) of <Dataset>Val: val = min(int(0.1 n), 5000)
VAL_SPLITS = {
    "Flowers102": (918, 102), "PCAM": (257144, 5000), "FER2013": (25839, 2870),
    "OxfordIIITPet": (3312, 368), "STL10": (4500, 500), "CIFAR100": (45000, 5000),
    "CIFAR10": (45000, 5000), "Food101": (70750, 5000), "FashionMNIST": (55000, 5000),
    "EMNIST": (235000, 5000), "KMNIST": (55000, 5000), "RenderedSST2": (6228, 692),
}  # fmt: skip


# ------------------------------------------------------------------------------------------ tables
def test_task_lists_are_the_authors():
    assert [ct.canonical_dataset(t) for t in CLIP20_TASKS] == AUTHORS_ALL_DATASETS
    assert CLIP14_TASKS == CLIP20_TASKS[:14] and len(set(CLIP20_TASKS)) == 20
    assert set(CLIP14_TASKS[:8]) == set(CLIP8_TASKS)
    assert set(CLIP20_TASKS) <= set(DATASETS.names())
    assert ct.DATASETS[8:] == tuple(AUTHORS_ALL_DATASETS[8:])


def test_classnames_are_the_authors():
    long = {"Flowers102": FLOWERS102, "Food101": FOOD101, "CIFAR100": CIFAR100, "OxfordIIITPet": PETS}
    for name, expected in {**long, **SHORT_CLASSNAMES}.items():
        assert ct.classnames(name) == expected, name
        assert ct.NUM_CLASSES[name] == len(expected), name
    assert sorted(FOOD101) == FOOD101 and sorted(CIFAR100) == CIFAR100  # torchvision sorts / meta order
    assert [len(v) for v in long.values()] == [102, 101, 100, 37]


def test_templates_are_the_authors():
    for name, expected in AUTHORS_TEMPLATES.items():
        assert ct.templates(name) == expected, name
    # the authors format FER2013's synonym lists into their f-strings as Python prints a list
    assert ct.prompts("FER2013Val", ct.classnames("FER2013")[5])[0] == (
        "a photo of a ['surprised', 'shocked', 'spooked'] looking face."
    )
    assert ct.prompts("food101", "apple_pie") == ["a photo of apple_pie, a type of food."]


def test_split_sizes_are_the_authors():
    for name, (n_train, _) in SIZES.items():
        train, val = train_val_split(n_train, name)
        assert (len(train), len(val)) == VAL_SPLITS[name], name
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(n_train))
    # the authors' own check of the seed-0 split (registry.py: MNISTVal's first training index)
    assert train_val_split(60000, "mnist")[0][0] == 36044
    with pytest.raises(ValueError, match="flowers102: 9 training images leave no val split"):
        train_val_split(9, "flowers102")


# ----------------------------------------------------------------------------------------- loaders
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clip20")
    write_clip20_data(root, ADDED)
    return root


LOSSY = ("flowers102", "oxfordiiitpet", "food101")  # JPEG files
CLASS_MAJOR = ("food101", "renderedsst2")  # listed class by class (JSON / folders), not in row order


def _order(task: str, n: int) -> list[int]:
    """The written rows in the order the loader lists them."""
    rows = list(range(n))
    return sorted(rows, key=label) if task in CLASS_MAJOR else rows


def _image(ds, i: int) -> np.ndarray:
    return ds[i]["image"].permute(1, 2, 0).numpy() * 255


def _expected(task: str, source: str, row: int) -> np.ndarray:
    img = stand_in_image(task, source, row).astype(np.float64)
    return np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img


@pytest.mark.parametrize("task", ADDED)
def test_loader_reads_its_layout(data, task):
    test = build_dataset(task, root=data, split="test", image_size=None)
    assert (
        test.classnames == ct.classnames(task)
        and test.num_classes == ct.NUM_CLASSES[ct.canonical_dataset(task)]
    )
    rows = _order(task, N_TEST)
    assert len(test) == N_TEST and test.targets == [label(r) for r in rows]
    for i, row in enumerate(rows):
        got, want = _image(test, i), _expected(task, "test", row)
        assert got.shape == want.shape, task
        if task in LOSSY:
            assert np.abs(got - want).mean() < 2, task
        else:
            np.testing.assert_allclose(got, want, atol=1e-3, err_msg=task)
    assert int(test[1][task]) == test.targets[1]


@pytest.mark.parametrize("task", ADDED)
def test_train_and_val_are_the_authors_split_of_the_training_set(data, task):
    rows = _order(task, N_TRAIN)
    train_idx, val_idx = train_val_split(N_TRAIN, task)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        ds = build_dataset(task, root=data, split=split, image_size=16)
        assert ds.targets == [label(rows[i]) for i in idx], (task, split)
        assert tuple(ds[0]["image"].shape) == (3, 16, 16)
    ds = build_dataset(task, root=data, split="val", image_size=None)
    if task not in LOSSY:
        np.testing.assert_allclose(_image(ds, 0), _expected(task, "train", rows[val_idx[0]]), atol=1e-3)


def test_fer2013_test_set_is_public_and_private_test(data, tmp_path):
    csv_text = (data / "fer2013" / "fer2013.csv").read_text().splitlines()
    usages = [line.rsplit(",", 1)[1] for line in csv_text[1:]]
    assert usages.count("PublicTest") == usages.count("PrivateTest") == N_TEST // 2
    # icml_face_data.csv: the same data, columns "emotion, Usage, pixels"
    (tmp_path / "fer2013").mkdir()
    rows = [line.split(",") for line in csv_text[1:]]
    lines = ["emotion, Usage, pixels"] + [f"{e},{u},{p}" for e, p, u in rows]
    (tmp_path / "fer2013" / "icml_face_data.csv").write_text("\n".join(lines) + "\n")
    ds = build_dataset("fer2013", root=tmp_path, split="test", image_size=None)
    assert ds.targets == [0, 1, 0, 1]
    np.testing.assert_allclose(_image(ds, 3), _expected("fer2013", "test", 3), atol=1e-3)
    with open(tmp_path / "fer2013" / "icml_face_data.csv", "a") as f:
        f.write("3,Training\n")
    with pytest.raises(ValueError, match=r"icml_face_data\.csv:16: 2 fields, expected 3"):
        build_dataset("fer2013", root=tmp_path, split="test")


def test_errors_name_the_file(data, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"flowers102: file .*flowers-102/imagelabels\.mat not found"):
        build_dataset("flowers102", root=tmp_path, split="test")
    with pytest.raises(FileNotFoundError, match=r"pcam: folder .*PCAM/pcam not found \(nor .*pcam\)"):
        build_dataset("pcam", root=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        build_dataset("renderedsst2", root=data, split="valid")
    pets = tmp_path / "OxfordIIITPet" / "oxford-iiit-pet" / "annotations"
    pets.mkdir(parents=True)
    (pets / "test.txt").write_text("Abyssinian_1 2 1 1\n")  # breed Abyssinian under class 2
    with pytest.raises(ValueError, match=r"test\.txt: Abyssinian_1 has class 2 \('American Bulldog'\)"):
        build_dataset("oxfordiiitpet", root=tmp_path, split="test")


def _system_call(path: Path, key: str, marker: Path) -> Path:
    """A protocol-0 pickle of ``{key: os.system("touch <marker>")}`` (runs when plainly unpickled)."""
    call = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR"
    path.write_bytes(b"(dS'" + key.encode() + b"'\n" + call + b"s.")
    return path


def test_cifar_batches_never_run_pickled_code(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match=r"data: 'data' is not a pickled C-ordered uint8 numpy array"):
        read_cifar_batch(_system_call(tmp_path / "data", "data", marker))
    loaded = read_cifar_batch(_system_call(tmp_path / "labels", "labels", marker))
    assert type(loaded["labels"]).__name__ == "system"  # only recorded, never called
    assert not marker.exists()
    floats = tmp_path / "floats"
    floats.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match=r"floats: 'data' is not a pickled C-ordered uint8 numpy array"):
        read_cifar_batch(floats)


def test_cifar_batch_arrays_and_names(data):
    meta = read_cifar_batch(data / "cifar-100-python" / "meta")
    assert meta["fine_label_names"][:2] == ["apple", "aquarium_fish"]
    batch = read_cifar_batch(data / "cifar-10-batches-py" / "test_batch")
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (N_TEST, 3072)
    assert batch["labels"] == [0, 1, 0, 1]


def test_writer_covers_all_twenty(tmp_path):
    assert set(WRITERS) == set(ADDED)
    write_clip20_data(tmp_path)
    for task in CLIP20_TASKS:
        split = {"sun397": "val", "dtd": "test"}.get(task, "test")
        ds = build_dataset(task, root=tmp_path, split=split, image_size=8)
        assert len(ds) == 4, task
    with pytest.raises(ValueError, match="unknown tasks \\['imagenet'\\]"):
        write_clip20_data(tmp_path / "x", ["imagenet"])
