"""Counts faces with OpenCV's Haar cascade in raw 8-bit grey frames.

Usage: faces.py WIDTH HEIGHT CASCADE < frames
Reads whole WIDTH x HEIGHT frames from standard input and prints, as JSON,
one list of face rectangles [x, y, w, h] per frame. Used by the e2e test
TestAnonymisedFaces (Debian packages python3-opencv and opencv-data).
"""
import json
import sys

import cv2
import numpy as np


def main():
    w, h, cascade = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    data = sys.stdin.buffer.read()
    if not data or len(data) % (w * h):
        sys.exit(f"faces.py: {len(data)} bytes on stdin are not whole {w}x{h} frames")
    clf = cv2.CascadeClassifier(cascade)
    if clf.empty():
        sys.exit(f"faces.py: cannot load the cascade {cascade}")
    frames = np.frombuffer(data, np.uint8).reshape(-1, h, w)
    out = []
    for f in frames:
        faces = clf.detectMultiScale(f, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
        out.append([[int(v) for v in r] for r in faces])
    json.dump(out, sys.stdout)


main()
