"""Scratch: give a run trained before train.select its last epoch's held-out probabilities
(fold<k>/epochs_oof.csv, one epoch), predicted from fold<k>/last.pt exactly as training validates."""
import sys
import pandas as pd, torch
from hpa.classes import PROB_COLUMNS
from hpa.data.dataset import load_split
from hpa.data.folds import folds_path, read_folds
from hpa.rundir import RunDir, load_checkpoint, load_model
from hpa.training.data import TrainingSet
from hpa.training.swa import predict_validation

rd = RunDir(sys.argv[1])
cfg = rd.load_config()
labels, y, fold_of = load_split(cfg)
data = TrainingSet.load(cfg, labels, y, fold_of, read_folds(folds_path(cfg)))
for k in rd.finished_folds():
    fi = data.fold_input(k)
    state = load_checkpoint(rd.fold(k).last)
    model = load_model(cfg, rd.fold(k).last)
    probs = predict_validation(model, cfg, fi, torch.device("cpu"), f"fold {k} last")
    kag = fi.kaggle_val()
    df = pd.DataFrame(probs[kag], columns=PROB_COLUMNS)
    df.insert(0, "epoch", int(state["epoch"]))
    df.insert(0, "fold", k)
    df.insert(0, "Id", fi.ids[fi.val_idx][kag])
    if len(sys.argv) > 2:       # check against what training wrote
        old = rd.fold(k).read_epochs_oof()
        old = old[old["epoch"] == int(state["epoch"])].set_index("Id").loc[df["Id"]]
        print("max abs diff", abs(old[PROB_COLUMNS].to_numpy() - df[PROB_COLUMNS].to_numpy()).max())
    else:
        rd.fold(k).write_epochs_oof(df)
    print(k, int(state["epoch"]), len(df))
