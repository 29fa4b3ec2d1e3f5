"""The reference notebook's dataset and model, verbatim but for `weights=None` (tests run offline).

Used to prove the contracts: its reader must read our `extract` output unchanged, and a
state_dict it saves must load in deepfake-cli and give the same probabilities.
"""

import os

import cv2
import numpy as np
import torch
import torch.nn as nn
from sklearn.utils import shuffle
from torch.utils.data import Dataset
from torchvision import models, transforms


class DeepfakeDataset(Dataset):
    def __init__(self, base_path, sequence_length=16, split='train', val_split=0.2):
        self.sequence_length = sequence_length
        self.base_path = base_path
        self.transform = transforms.Compose([
            transforms.ToTensor(),
        ])
        all_videos = self._collect_video_ids(base_path)
        all_videos = shuffle(all_videos, random_state=42)
        split_idx = int(len(all_videos) * (1 - val_split))
        self.videos = all_videos[:split_idx] if split == 'train' else all_videos[split_idx:]

    def _collect_video_ids(self, base_path):
        video_samples = []
        for folder in os.listdir(base_path):
            folder_path = os.path.join(base_path, folder)
            label = 0 if folder == "original" else 1
            video_ids = {}
            for file in os.listdir(folder_path):
                if file.endswith(".jpg"):
                    vid = "_".join(file.split("_")[:-1])
                    video_ids.setdefault(vid, []).append(file)
            for vid, files in video_ids.items():
                if len(files) >= self.sequence_length:
                    video_samples.append((folder_path, vid, label))
        return video_samples

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, idx):
        folder, video_id, label = self.videos[idx]
        imgs = []
        lmks = []
        for i in range(self.sequence_length):
            img_path = os.path.join(folder, f"{video_id}_{i}.jpg")
            lmk_path = os.path.join(folder, f"{video_id}_{i}.npy")
            img = cv2.imread(img_path)
            img = cv2.resize(img, (256, 256))
            img = self.transform(img)
            lmk = torch.tensor(np.load(lmk_path), dtype=torch.float32)
            imgs.append(img)
            lmks.append(lmk)
        imgs = torch.stack(imgs)
        lmks = torch.stack(lmks)
        return imgs, lmks, torch.tensor(label, dtype=torch.float32)


class DeepfakeDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = models.efficientnet_b0(weights=None)
        self.cnn.classifier = nn.Identity()
        self.embedding_dim = 1280
        self.sequence_length = 16
        self.lstm = nn.LSTM(input_size=1285, hidden_size=128, num_layers=1, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(
            nn.Linear(256, 64),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(64, 1),
            nn.Sigmoid()
        )

    def forward(self, x_imgs, x_lmks):
        B, T, C, H, W = x_imgs.shape
        x_imgs = x_imgs.view(B * T, C, H, W)
        features = self.cnn(x_imgs)
        features = features.view(B, T, -1)
        combined = torch.cat([features, x_lmks], dim=2)
        out, _ = self.lstm(combined)
        out = out[:, -1, :]
        return self.fc(out).squeeze(1)
