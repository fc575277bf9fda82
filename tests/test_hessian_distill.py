"""Self-distillation of a Hessian head (molsym.heads.distill): the surface is kept, the head learns."""
from __future__ import annotations

import pytest
import torch
from ase.build import molecule

import molsym
from molsym.heads.distill import distil_hessian_head, exact_hessians, hessian_head_errors


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = molsym.Potential.from_config({"family": "tensornet", "channels": 8, "layers": 1, "num_radial": 4,
                                          "cutoff": 3.5, "elements": [1, 6, 8]}).double()
    model.set_energy_reference(scale=1.0, shift=-0.1)
    return model.eval()


@pytest.fixture(scope="module")
def structures():
    frames = []
    for seed in range(4):
        atoms = molecule("CH3OH")
        atoms.rattle(0.05, seed=seed)
        frames.append(atoms)
    return frames


def test_student_keeps_the_surface_and_its_head_learns(teacher, structures):
    labels = exact_hessians(teacher, structures)
    log = []
    student = distil_hessian_head(teacher, structures, labels=labels, head={"channels": 4}, epochs=40, batch=2,
                                  lr=3e-2, progress=log.append)
    assert not student.training and "hessian" in student.head_names
    assert all(p.requires_grad for p in student.parameters())
    assert [row["epoch"] for row in log] == list(range(1, 41))
    # the untrained head predicts ~0 (first epoch's MSE ~ mean H^2); 80 steps take it below a third
    assert log[-1]["mse"] < log[0]["mse"] / 3, log
    for atoms in structures:  # the backbone is the teacher's: same energy and forces
        ours, theirs = student.predict(atoms), teacher.predict(atoms)
        assert abs(ours["energy"] - theirs["energy"]) < 1e-12
        assert abs(ours["forces"] - theirs["forces"]).max() < 1e-12
    errors = hessian_head_errors(student, structures, labels)
    assert errors["hessian_mae_ev_a2"] < errors["mean_abs_hessian_ev_a2"]
    with torch.no_grad():  # against its own predictions the head is exact
        own = [student(molsym.from_ase(a, student.cutoff, torch.float64), heads=("hessian",))["hessian"]
               for a in structures]
    assert hessian_head_errors(student, structures, own)["hessian_mae_ev_a2"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"structures": []}, "at least one structure"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch": 1.5}, "batch must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"max_seconds": 0}, "max_seconds must be a positive number"),
    ({"head": {"chanels": 4}}, "unknown Hessian head setting"),
    ({"head": {"cutoff": 9.0}}, "exceeds the model's cutoff"),
    ({"labels": [torch.zeros(3, 3)]}, "1 Hessians for 4 structures"),
    ({"labels": [torch.zeros(3, 3)] * 4}, "Hessian 0 has shape"),
    ({"labels": [torch.full((18, 18), float("nan"))] * 4}, "non-finite"),
])
def test_bad_arguments_are_refused(teacher, structures, kwargs, message):
    arguments = {"structures": structures, **kwargs}
    with pytest.raises(ValueError, match=message):
        distil_hessian_head(teacher, arguments.pop("structures"), **arguments)


def test_command_line_writes_a_student_checkpoint(teacher, structures, tmp_path, capsys):
    import ase.io

    from molsym.train.cli import main

    checkpoint, frames, student_path = tmp_path / "teacher.pt", tmp_path / "frames.xyz", tmp_path / "student.pt"
    molsym.save(teacher, checkpoint)
    ase.io.write(frames, structures)
    assert main(["distil-hessian", str(checkpoint), "--structures", str(frames), "--output", str(student_path),
                 "--channels", "4", "--epochs", "3", "--batch", "2", "--test", str(frames)]) == 0
    printed = capsys.readouterr().out
    assert "hessian_mae_ev_a2" in printed and "wrote" in printed
    student = molsym.load(student_path)
    assert "hessian" in student.head_names and student.config["heads"]["hessian"]["channels"] == 4
    ours, theirs = student.double().predict(structures[0]), teacher.predict(structures[0])
    assert abs(ours["energy"] - theirs["energy"]) < 1e-12
    # bad input: a missing file and a bad frame count are refused with exit status 2 and a message
    assert main(["distil-hessian", str(checkpoint), "--structures", str(tmp_path / "none.xyz"),
                 "--output", str(tmp_path / "x.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["distil-hessian", str(checkpoint), "--structures", str(frames), "--frames", "0",
                 "--output", str(tmp_path / "x.pt")]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
