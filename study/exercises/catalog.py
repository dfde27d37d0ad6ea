"""The studies' catalogue: their specs (package data, found wherever the package is installed), their
names, what ``--quick`` changes, and the folders a run writes. Importable without torch, pandas
or matplotlib."""

from __future__ import annotations

import importlib.resources
from typing import Any

from ..errors import ParameterError
from ..grid import Grid, load_grid, log_sizes

#: The studies' specs: package data (study/exercises/specs/NAME.toml), read through importlib.resources, so
#: that an installed wheel finds them as a checkout does.
SPECS_FOLDER = "specs"


#: Each exercise's study: the name of its spec (study/exercises/specs/NAME.toml) and what --quick changes in it.
SPECS: dict[int, tuple[str, dict[str, Any]]] = {
    1: ("ex1_reduction", {"replicates": 3}),
    2: ("ex2_huber", {"replicates": 3, "num_train": [50, 200, 1000], "epoch": [1, 3, 10, 20]}),
    3: ("ex3_gradients", {"replicates": 3, "epoch": list(range(1, 11))}),
    4: ("ex4_lr_epochs", {"replicates": 3, "epoch": [1, 3, 10, 30]}),
    5: ("ex5_data_size", {"replicates": 6, "num_train": log_sizes(5, 2000), "epoch": [1, 10]}),
    6: ("ex6_reaching_the_limit", {"replicates": 6, "epoch": [1, 2, 20]}),
    7: ("ex7_weight_decay", {"replicates": 6, "num_train": [20, 1000]}),
}


#: Each study's figures (their file stems under figures/): ``study plot --figure NAME`` draws one
#: from the study's raw table.
FIGURES: dict[int, tuple[str, ...]] = {
    1: ("ex1_reduction",),
    2: ("ex2_huber_losses", "ex2_huber"),
    3: ("ex3_gradients",),
    4: ("ex4_lr_epochs",),
    5: ("ex5_data_size",),
    6: ("ex6_reaching_the_limit",),
    7: ("ex7_weight_decay",),
}
#: Figure name -> the study that draws it.
EXERCISE_FIGURES = {name: number for number, names in FIGURES.items() for name in names}
#: The studies that answer the book's exercises (§3.5's five); those after them go beyond.
BOOK_EXERCISES = 5


def label(number: int) -> str:
    """How answers.md names a study: "Exercise 4" for the book's, "Study 6" for those beyond."""
    return f"Exercise {number}" if number <= BOOK_EXERCISES else f"Study {number}"


#: The folders an exercise run writes, under its out_dir.
LAYOUT = ("results", "results/raw", "figures")


#: Seconds each study takes in one process on this project's machine (training, tables and
#: figures): the slowest are handed out first.
STUDY_COST = {2: 40.0, 5: 20.0, 6: 10.0, 7: 8.0, 4: 4.0, 1: 3.0, 3: 2.5}


def check_numbers(numbers: Any) -> list[int]:
    """The exercise numbers, refused (ParameterError) unless each is one of SPECS."""
    numbers = list(numbers)
    unknown = [n for n in numbers if n not in SPECS]
    if unknown or not numbers:
        raise ParameterError(
            "numbers",
            "parameter of run_exercises",
            f"among {sorted(SPECS)}",
            unknown[0] if len(unknown) == 1 else unknown,
        )
    return numbers


def study_grid(number: int, quick: bool = False) -> Grid:
    """Exercise ``number``'s grid, from its spec (smaller with ``quick``)."""
    name, smaller = SPECS[number]
    spec = importlib.resources.files(__package__).joinpath(SPECS_FOLDER).joinpath(f"{name}.toml")
    with importlib.resources.as_file(spec) as path:
        grid = load_grid(path)
    return Grid(**{**grid.to_dict(), **smaller}) if quick else grid
