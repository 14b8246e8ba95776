"""A user task: logistic-regression-style MLP on scikit-learn's wine data."""
import time

import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split


def train(config, ctx):
    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, stratify=y, random_state=ctx.seed)
    x_tr, x_va = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(x_va, dtype=torch.float32)
    y_tr, y_va = torch.tensor(y_tr), torch.tensor(y_va)

    torch.manual_seed(ctx.train_seed)
    model = ctx.prepare_model(torch.nn.Sequential(
        torch.nn.Linear(13, config["hidden"]), torch.nn.ReLU(), torch.nn.Linear(config["hidden"], 3)))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    loss_fn = torch.nn.functional.cross_entropy

    for epoch in range(1, ctx.max_epochs + 1):
        start = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(x_tr)).split(config["batch_size"]):
            opt.zero_grad()
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(x_va)
            ctx.report({
                "train_loss": loss_fn(model(x_tr), y_tr).item(),
                "val_loss": loss_fn(out, y_va).item(),
                "val_accuracy": (out.argmax(1) == y_va).float().mean().item(),
                "epoch": epoch,
                "epoch_time_s": time.perf_counter() - start,
            })
