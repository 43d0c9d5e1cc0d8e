#!/usr/bin/env python3
"""Times LeNet-5 in PyTorch eager mode on the same images and settings as `fashion-mnist bench`.

The same network (Conv 6@5x5 ReLU, max-pool 2, Conv 16@5x5 ReLU, max-pool 2, Dense 120, 84, 10),
Adam (lr 1e-3, eps 1e-7 as Keras), cross-entropy, shuffled batches. Prints one line per epoch:
`epoch_seconds EPOCH SECONDS`. Needs torch and numpy. Reads the IDX files (.gz or raw) from --data.
"""
import argparse
import time

from idx_files import find, read_idx


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=48000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    import torch
    from torch import nn

    device = torch.device(args.device)
    images = read_idx(find(args.data, "train-images-idx3-ubyte"))[: args.images]
    labels = read_idx(find(args.data, "train-labels-idx1-ubyte"))[: args.images]
    x = torch.tensor(images, dtype=torch.float32).div_(255.0).reshape(-1, 1, 28, 28).to(device)
    y = torch.tensor(labels, dtype=torch.int64).to(device)

    torch.manual_seed(42)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    for epoch in range(1, args.epochs + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        order = torch.randperm(n, device=device)
        for start in range(0, n, args.batch_size):
            batch = order[start : start + args.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            # Reading the loss each step, as the Rust loop does (progress and NaN checks).
            loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"epoch_seconds {epoch} {time.perf_counter() - started:.4f}", flush=True)


if __name__ == "__main__":
    main()
