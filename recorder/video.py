"""RGB as H.264 inside the episode file (schema v2): an encoder for the writer thread and a
random-access decoder with a small decoded-GOP cache for the reader.

Layout of ``/obs/rgb`` in a v2 episode (a group; recorder/schema.py validates it):

- ``packets``: 1-D uint8, the encoded packets back to back (Annex B, SPS/PPS repeated before
  every keyframe, so each GOP decodes on its own);
- ``index``: (N, 4) int64, one row per frame: byte offset, byte size, flags (1 = keyframe), CRC-32
  of the packet. Unwritten rows read as the fill value -1;
- attributes: codec, encoder, pix_fmt, gop, crf, width, height.

HDF5's SWMR mode does not handle variable-length data reliably, so packets are not vlen rows:
the writer appends a flush's packets to ``packets`` first and only then the matching ``index``
rows (and /time after those), so the index on disk never points past written bytes, and the CRC
tells recovery exactly which packets arrived whole (recorder/recovery.py).

Why H.264 (libx264 ultrafast + zerolatency): one packet out per frame in, no lookahead or
B-frames, ~2 ms of one core per 640x480 frame (bench/recorder.py); SVT-AV1 buffers frames
(random-access prediction) and its low-delay modes cost more. A fixed GOP (``gop``) bounds what a
random read decodes: at most ``gop`` packets from the preceding keyframe.
"""
from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from fractions import Fraction

import av
import cv2
import numpy as np

__all__ = ["RGB_CODECS", "DEFAULT_RGB_CODEC", "VideoEncoder", "VideoDecoder", "default_gop", "KEYFRAME",
           "write_video", "VideoError"]

RGB_CODECS = ("h264",)
DEFAULT_RGB_CODEC = "h264"
DEFAULT_CRF = 23  # bench/recorder.py: ~40 dB PSNR on camera-like frames
KEYFRAME = 1
INDEX_COLUMNS = ("offset", "size", "flags", "crc32")
_ENCODERS = {"h264": "libx264"}
PACKET_CHUNK = 1 << 16  # bytes: a few frames per chunk at 640x480, a partial last chunk stays small


class VideoError(Exception):
    """An encoder/decoder failure, one line."""


def default_gop(fps: float) -> int:
    """A keyframe every third of a second (10 frames at 30 fps, 7 at 20 fps): a random read decodes at
    most that many packets (an I-frame ~1.2 ms, a P-frame ~0.15 ms at 640x480). GOP 15 at 30 fps
    measured 3.3 ms CPU p99 per random RGB read, GOP 10 2.4 ms, for 1.2 vs 1.6 KB/frame."""
    return int(min(30, max(1, round(float(fps) / 3))))


def _even(n: int) -> int:
    return n + (n & 1)


class VideoEncoder:
    """Encode RGB frames one by one; ``encode`` returns (packet bytes, is_keyframe) for each frame.

    Runs in the caller's thread (``thread_count=1``, so the episode writer's CPU time counts it).
    Odd frame sizes are padded to even ones (yuv420p) by repeating the last row/column; the
    decoder crops them off again.
    """

    def __init__(self, width: int, height: int, fps: float, *, codec: str = DEFAULT_RGB_CODEC,
                 gop: int | None = None, crf: int = DEFAULT_CRF):
        if codec not in _ENCODERS:
            raise ValueError(f"unknown RGB codec {codec!r}; use one of {', '.join(RGB_CODECS)}")
        self.width, self.height = int(width), int(height)
        self.codec, self.gop, self.crf = codec, int(gop or default_gop(fps)), int(crf)
        ctx = av.CodecContext.create(_ENCODERS[codec], "w")
        ctx.width, ctx.height, ctx.pix_fmt = _even(self.width), _even(self.height), "yuv420p"
        rate = Fraction(float(fps)).limit_denominator(1001)
        ctx.time_base, ctx.framerate = 1 / rate, rate
        ctx.gop_size = self.gop
        ctx.thread_count = 1
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": str(self.crf),
                       # fixed GOP (no scene-cut keyframes), no B-frames: one packet per frame, in order
                       "x264-params": f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:bframes=0"}
        self._ctx = ctx
        self._n = 0
        self.attrs = {"codec": codec, "encoder": _ENCODERS[codec], "pix_fmt": "yuv420p", "gop": self.gop,
                      "crf": self.crf, "width": self.width, "height": self.height}

    def encode(self, rgb: np.ndarray) -> tuple[bytes, bool]:

        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise VideoError(f"frame {rgb.shape} {rgb.dtype}, expected {(self.height, self.width, 3)} uint8")
        if rgb.shape[0] & 1 or rgb.shape[1] & 1:
            rgb = np.pad(rgb, ((0, rgb.shape[0] & 1), (0, rgb.shape[1] & 1), (0, 0)), mode="edge")
        # OpenCV's BT.601 I420 conversion: 8x cheaper than swscale's here and releases the GIL; the
        # reader converts back with its inverse (the stream is read through VideoDecoder only).
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420),
                                           format="yuv420p")
        frame.pts = self._n
        # A keyframe every gop frames exactly (x264 would otherwise only cap the interval).
        frame.pict_type = av.video.frame.PictureType.I if self._n % self.gop == 0 else av.video.frame.PictureType.NONE
        packets = self._ctx.encode(frame)
        if len(packets) != 1:
            raise VideoError(f"encoder returned {len(packets)} packets for frame {self._n} (expected 1)")
        self._n += 1
        p = packets[0]
        return bytes(p), bool(p.is_keyframe)


def write_video(group, frames, n: int, fps: float, *, codec: str = DEFAULT_RGB_CODEC, gop: int | None = None,
                crf: int = DEFAULT_CRF, width: int, height: int, progress=None) -> None:
    """Encode ``n`` frames (an iterable of HxWx3 uint8) into an h5py group laid out as above, in one go
    (migration, re-rendering: files that are not being recorded)."""
    enc = VideoEncoder(width, height, fps, codec=codec, gop=gop, crf=crf)
    group.attrs.update(enc.attrs)
    chunks, index, offset, count = [], np.empty((n, 4), np.int64), 0, 0
    for rgb in frames:
        if count == n:
            break
        data, key = enc.encode(rgb)
        index[count] = (offset, len(data), KEYFRAME if key else 0, zlib.crc32(data))
        chunks.append(np.frombuffer(data, np.uint8))
        offset += len(data)
        count += 1
        if progress is not None:
            progress(1)
    if count != n:
        raise VideoError(f"got {count} frames, expected {n}")
    stream = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    group.create_dataset("packets", data=stream, maxshape=(None,), chunks=(PACKET_CHUNK,))
    group.create_dataset("index", data=index, maxshape=(None, 4), chunks=(256, 4), fillvalue=-1)



def valid_prefix(index: np.ndarray, packets, *, check_crc: bool = True) -> int:
    """Rows of ``index`` from the start whose packet lies inside ``packets`` (whose length and
    bytes are checked) and matches its CRC: the frames a crash left whole."""
    total = packets.shape[0]
    n = 0
    for row in index:
        off, size, flags, crc = (int(v) for v in row)
        if off < 0 or size <= 0 or off + size > total or (n == 0 and not flags & KEYFRAME):
            break
        if check_crc and zlib.crc32(packets[off:off + size].tobytes()) != crc & 0xFFFFFFFF:
            break
        n += 1
    return n


class VideoDecoder:
    """Random access to the frames of a ``/obs/rgb`` group (h5py Group, kept open by the caller).

    A read of frame i decodes from the keyframe before it (at most ``gop`` packets) unless the
    decoder already stands in that GOP before i; decoded frames of the last ``cache_gops`` GOPs
    are kept (as YUV, ~0.45 MB each at 640x480), so scrubbing back and forth costs one colour
    conversion per frame. Packets are CRC-checked: a damaged one raises instead of showing wrong
    pixels.
    """

    def __init__(self, group, n_frames: int, *, cache_gops: int = 2):
        self.width, self.height = int(group.attrs["width"]), int(group.attrs["height"])
        self.codec = str(group.attrs["codec"])
        self._packets = group["packets"]
        index = group["index"][:n_frames]
        self._offset, self._size = index[:, 0], index[:, 1]
        self._flags, self._crc = index[:, 2], index[:, 3]
        self.keyframes = np.flatnonzero(self._flags & KEYFRAME)
        self.n_frames = int(n_frames)
        self._cache: OrderedDict[int, dict[int, object]] = OrderedDict()  # keyframe -> {frame: av frame}
        self._cache_gops = int(cache_gops)
        self._ctx = None
        self._ctx_gop, self._ctx_next = -1, -1  # the GOP the decoder stands in, the next frame it will output
        self._lock = threading.Lock()

    def gop_start(self, i: int) -> int:
        k = int(np.searchsorted(self.keyframes, i, side="right")) - 1
        if k < 0:
            raise VideoError(f"frame {i} has no keyframe before it")
        return int(self.keyframes[k])

    def frame(self, i: int) -> np.ndarray:
        with self._lock:
            start = self.gop_start(i)
            cached = self._cache.get(start, {}).get(i)
            if cached is None:
                self._decode_to(start, i)
                cached = self._cache[start][i]
            self._cache.move_to_end(start)
            rgb = cv2.cvtColor(cached.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
        if rgb.shape[:2] != (self.height, self.width):
            rgb = np.ascontiguousarray(rgb[: self.height, : self.width])
        return rgb

    def _new_context(self):
        ctx = av.CodecContext.create(self.codec, "r")
        ctx.thread_count = 1  # frame threads would delay output by a frame per thread
        return ctx

    def _decode_to(self, start: int, i: int) -> None:
        if self._ctx is None or self._ctx_gop != start or self._ctx_next > i:
            self._ctx = self._new_context()
            self._ctx_gop, self._ctx_next = start, start
        cache = self._cache.setdefault(start, {})
        # One read for the run of packets this decode needs (an HDF5 call costs more than the bytes).
        first = self._ctx_next
        lo, hi = int(self._offset[first]), int(self._offset[i] + self._size[i])
        blob = self._packets[lo:hi]
        for j in range(first, i + 1):
            off, size = int(self._offset[j]) - lo, int(self._size[j])
            data = blob[off:off + size].tobytes()
            if len(data) != size or zlib.crc32(data) != int(self._crc[j]) & 0xFFFFFFFF:
                self._ctx = None
                raise VideoError(f"packet of frame {j} is damaged (size or CRC-32 mismatch)")
            p = av.Packet(data)
            p.pts = j
            try:
                out = self._ctx.decode(p)
            except Exception as exc:
                self._ctx = None
                raise VideoError(f"frame {j}: {exc}") from None
            for fr in out:
                cache[int(fr.pts)] = fr
        self._ctx_next = i + 1
        if i not in cache:  # a decoder that holds frames back: drain it (and start afresh next time)
            try:
                for fr in self._ctx.decode(None):
                    cache[int(fr.pts)] = fr
            finally:
                self._ctx = None
        if i not in cache:
            raise VideoError(f"frame {i} did not come out of the decoder")
        while len(self._cache) > self._cache_gops:
            oldest = next(iter(self._cache))
            if oldest == start:
                self._cache.move_to_end(start)
                continue
            del self._cache[oldest]
