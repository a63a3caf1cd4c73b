"""Pipeline configuration: YAML files in ``configs/`` validated by these pydantic models.

Every field has the paper's / official EmoTalker default; ``configs/demo.yaml`` shrinks sizes so the
whole pipeline runs on 2 CPU cores. Overrides use dotted keys (``train.vqvae.steps=50``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotalker.configs.constants import DEFAULT_TEST_ACTORS, EMOTIONS, LEVELS, WaveformNormalization
from emotalker.configs.fingerprint import digest
from emotalker.configs.secrets import CREDENTIALS_HELP, credential_keys, holds_credentials, redact_secrets


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsConfig(_Strict):
    """Where everything lives; relative paths resolve against ``root``."""

    # errors never echo the offending value: it may be a credential someone put in storage_options
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    root: Path = Path("data")
    archives: Path = Path("archives")  # downloaded MEAD tarballs
    raw: Path = Path("raw")  # extracted MEAD tree
    prepared: Path = Path("prepared")  # 25 fps video / 16 kHz audio
    features: Path = Path("features")  # Zarr stores
    manifest: Path = Path("manifest.parquet")
    split: Path = Path("split.json")
    checkpoints: Path = Path("checkpoints")
    outputs: Path = Path("outputs")

    # Zarr feature stores on object storage or any fsspec URL (s3://bucket/features, memory://...), with
    # the k-means models, failure records and copies of the manifest and split beside them (a machine
    # whose root lacks those reads them there: storage/shared.py); None keeps all of it under `features`
    features_url: str | None = None
    # options for the fsspec backend of features_url, passed wherever a store is opened (flows, Dask
    # workers, window readers, generation): e.g. {endpoint_url: http://minio:9000, client_kwargs:
    # {region_name: eu-west-1}} or {anon: true} for s3fs. Credentials are refused here: they come from
    # the environment or the backend's credential chain (AWS_*, ~/.aws, GOOGLE_APPLICATION_CREDENTIALS)
    storage_options: dict[str, Any] = {}

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = credential_keys(v)
        if bad:
            raise ValueError(
                f"credential field {bad[0]!r} is not allowed in storage_options: set it in the environment "
                "or the backend's credential chain (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                "~/.aws/credentials, GOOGLE_APPLICATION_CREDENTIALS)"
            )
        return v

    def store_root(self) -> str:
        """Where the Zarr stores live: ``features_url`` when set, else the local features folder."""
        return self.features_url or str(self.resolve("features"))

    def resolve(self, name: str) -> Path:
        """Absolute path of a named location (``root`` joined unless already absolute)."""
        p = getattr(self, name)
        return p if p.is_absolute() or name == "root" else self.root / p


class DownloadConfig(_Strict):
    urls_file: Path | None = None  # manifest of archive URLs (see tasks/download.py)
    retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    chunk_bytes: int = Field(1 << 20, gt=0)


class SyntheticConfig(_Strict):
    """The built-in MEAD-shaped demo data set."""

    actors: list[str] = ["M003", "W009", "M012", "W021"]
    emotions: list[str] = list(EMOTIONS)
    levels: list[int] = list(LEVELS)
    sentences_per_level: int = Field(1, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy seeds are 32-bit
    image_size: int = Field(256, ge=64, multiple_of=2)  # H.264 yuv420p needs even sizes
    video_split: bool = False  # write video_1.tar + video_2.tar (a real MEAD archive variant)
    # steps fine-tuning the demo's emotion HuBERT stand-in for emotion on the training actors' speech
    # (tasks/demo/standins/emotion_hubert.py); 0 leaves it random (its features then carry no emotion)
    emotion_model_steps: int = Field(1200, ge=0)
    # synthetic speakers per sex (never the demo's actors) the emotion stand-in is fine-tuned on besides the
    # training actors: its own emotion corpus, as superb's ER was fine-tuned on IEMOCAP's ten speakers
    emotion_model_speakers: int = Field(8, ge=0)
    # steps training the SadTalker audio2exp stand-in (the lip branch's frozen Phi_A) on the training actors'
    # speech (tasks/demo/standins/audio2exp.py); 0 leaves it random (the demo's lips then cannot follow)
    audio2exp_steps: int = Field(150, ge=0)
    workers: int = Field(1, ge=1)

    @field_validator("emotions")
    @classmethod
    def _known_emotions(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(EMOTIONS))
        if bad:
            raise ValueError(f"unknown emotions {bad}; MEAD has {list(EMOTIONS)}")
        return v


class DataConfig(_Strict):
    views: list[str] = ["front"]
    test_actors: list[str] = list(DEFAULT_TEST_ACTORS)
    val_actors: list[str] = []
    val_fraction: float = Field(0.05, ge=0, lt=1)  # of train clips, when val_actors is empty
    max_clips: int | None = Field(None, ge=1)  # cap for quick runs
    max_av_mismatch_frames: int = Field(1, ge=0)  # audio/video length disagreement tolerated (then trimmed)
    workers: int = Field(2, ge=1)  # parallel clip preparation


class FaceFeatureConfig(_Strict):
    """Deep3DFace extraction: real assets are looked up at these paths."""

    deep3dface_checkpoint: Path = Path("assets/deep3dface/epoch_20.pth")
    lm3d_mat: Path = Path("assets/deep3dface/similarity_Lm3D_all.mat")
    # folder holding face-alignment's s3fd-619a316812.pth and 2DFAN4-11f355bf06.pth.tar;
    # None: $TORCH_HOME/hub/checkpoints, where face-alignment itself caches them
    face_alignment_dir: Path | None = None
    detect_max_side: int | None = Field(640, ge=64)  # frames shrunk for SFD detection (memory on 1080p)
    flip_input: bool = True  # face-alignment's test-time flip averaging
    face_detector: Literal["sfd", "blazeface", "dlib"] = "sfd"
    batch_size: int = Field(32, ge=1)
    missing_face: Literal["interpolate", "exclude"] = "interpolate"
    # extract: run Deep3DFace on the prepared video; import: read pre-extracted .mat files from import_dir
    # (Deep3DFace id/exp/... or SadTalker coeff_3dmm); synthetic_ground_truth: the demo renderer's motion.
    source: Literal["extract", "import", "synthetic_ground_truth"] = "extract"
    import_dir: Path | None = None
    ground_truth_dir: Path | None = None  # synthetic demo: where the renderer wrote its motion sidecars
    # Deep3DFace's BFM/BFM_model_front.mat (Basel Face Model 2009 + Exp_Pca.bin, see README); only enables
    # the generation preview's animated landmarks. None: the preview shows the static reference image.
    bfm_path: Path | None = None


class AudioFeatureConfig(_Strict):
    emotion_model: str = "superb/hubert-base-superb-er"  # local dir or HF cache id
    content_model: str = "facebook/hubert-base-ls960"
    content_layer: int = Field(9, ge=0)
    emotion_layer: int = Field(-1, ge=-1)  # -1: last hidden state of the emotion-finetuned model
    # waveform normalisation before HuBERT: "pretraining" as fairseq/s3prl trained and fine-tuned the
    # checkpoint (only layer-norm, i.e. large, models normalise: the HuBERT k-means recipe and superb);
    # "preprocessor_config" as the checkpoint's Hugging Face preprocessor_config.json says
    waveform_normalization: WaveformNormalization = "pretraining"
    batch_seconds: float = Field(120.0, gt=0)  # audio per batch (length-bucketed)
    # clips longer than chunk_seconds + 2 * chunk_context_seconds run through HuBERT in chunks (bounded
    # memory, linear time); each chunk's transformer also sees chunk_context_seconds on either side
    chunk_seconds: float = Field(30.0, gt=0)
    chunk_context_seconds: float = Field(5.0, ge=0)
    kmeans_k: int = Field(200, ge=2)
    kmeans_sample_frames: int = Field(500_000, ge=100)
    kmeans_batch_size: int = Field(10_000, ge=1)
    kmeans_max_iter: int = Field(100, ge=1)
    kmeans_n_init: int = Field(20, ge=1)
    kmeans_max_no_improvement: int = Field(100, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy seeds are 32-bit


class DaskConfig(_Strict):
    address: str | None = None  # None: a LocalCluster on 127.0.0.1
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)


class MlflowConfig(_Strict):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "emotalker"
    registry_prefix: str = "emotalker"
    # where a new experiment stores artifacts; None: ``mlartifacts/`` beside a sqlite database (MLflow
    # itself would use ./mlruns of whatever directory the process runs in), the server's choice otherwise
    artifact_location: str | None = None


class VQVAEConfig(_Strict):
    """Stage 1 (Sec. 3.2): motion VQ-VAE over the 57 face coefficients."""

    in_dim: int = Field(57, ge=1)
    codebook_size: int = Field(1024, ge=2)  # K
    code_dim: int = Field(256, ge=1)  # d_c
    down_t: int = Field(2, ge=0)  # l = 2**down_t = 4 frames per token
    stride_t: int = Field(2, ge=2, multiple_of=2)  # even: the strided convolutions pad stride/2
    width: int = Field(512, ge=1)
    depth: int = Field(4, ge=1)
    dilation_growth: int = Field(3, ge=1)
    ema_decay: float = Field(0.99, gt=0, lt=1)
    commitment_beta: float = Field(0.2, ge=0)
    emotion_weight: float = Field(0.2, ge=0)
    emotion_head: bool = True  # ablation switch (Table 3)
    dead_threshold: float = Field(1.0, ge=0)  # EMA count under which a code is reset to a batch vector


class TransformerConfig(_Strict):
    """Stage 2 (Sec. 3.3): cross-modal autoregressive Transformer decoder."""

    d_model: int = Field(256, ge=1)
    n_layers: int = Field(6, ge=1)
    n_heads: int = Field(4, ge=1)
    ff_dim: int = Field(1024, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    audio_dim: int = Field(768, ge=1)
    # h in Eq. 5 (Eq. 7's k = floor(T'_a / T'_v) follows from the audio rate)
    alibi_window: int = Field(4, ge=1)
    contrastive_weight: float = Field(0.8, ge=0)  # lambda of Eq. 8
    # Eq. 9's sim(.) is the plain cosine similarity (temperature 1); other values divide it
    # (0.1 before issue 26)
    contrastive_temperature: float = Field(1.0, gt=0)
    # Eq. 6-7 cross-attention window of token i (0-based): "authors" = the official enc_dec_mask
    # [k*i - k, k*i + k), previous + current token; "eq7" = Eq. 7 as written, [k*i, k*i + 2k + 1)
    alignment_window: Literal["authors", "eq7"] = "authors"
    # the reference's projection added to every decoder input too (not in the paper; before issue 26)
    style_every_input: bool = False
    # ablation switches (Table 4 and variants); the paper's model has all of them on
    use_content_tokens: bool = True  # cross-attention to the k-means cluster centres of the tokens
    use_alignment_mask: bool = True  # Eq. 6-7
    use_biased_mask: bool = True  # Eq. 4-5
    use_contrastive: bool = True  # Eq. 9 term of Eq. 8
    style_from_reference: bool = True  # start token = stage-1 encoding of the reference


class LipConfig(_Strict):
    """Lip branch (Sec. 3.4): Wav2Lip-style audio encoder -> 64 exp -> 13 lip coefficients."""

    lip_mix: float = Field(0.2, ge=0, le=1)  # Eq. 10
    # SadTalker's audio2exp: auido2exp_00300-model.pth or the audio2exp. part of
    # SadTalker_V0.0.2_256.safetensors (both from SadTalker's releases). Phi_A and Phi_M1 start from it;
    # Phi_M2 (mapping2, 13 -> 13) is always new.
    # null: Phi_A and Phi_M1 train from random weights on MEAD alone (needs freeze_audio_encoder: false)
    init_checkpoint: Path | None = Path("assets/sadtalker/SadTalker_V0.0.2_256.safetensors")
    freeze_audio_encoder: bool = True  # Phi_A keeps SadTalker's weights (the authors' requires_grad = False)

    @model_validator(mode="after")
    def _frozen_needs_weights(self) -> LipConfig:
        if self.freeze_audio_encoder and self.init_checkpoint is None:
            raise ValueError(
                "lip.freeze_audio_encoder=true needs lip.init_checkpoint (a frozen random encoder learns "
                "nothing); set lip.freeze_audio_encoder=false to train the lip branch from scratch"
            )
        return self


Beta = Annotated[float, Field(ge=0, lt=1)]  # an Adam beta


class TrainStageConfig(_Strict):
    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(300, ge=0)
    window: int = Field(96, ge=4)  # frames per training clip (clip_len)
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(50, ge=1)
    val_every: int = Field(500, ge=1)
    seed: int = Field(0, ge=0, lt=2**32)  # numpy seeds are 32-bit
    betas: tuple[Beta, Beta] = (0.9, 0.999)  # AdamW


class VQVAETrainConfig(TrainStageConfig):
    batch_size: int = Field(512, ge=1)  # official VQ batch
    betas: tuple[Beta, Beta] = (0.9, 0.99)  # the paper's VQ-VAE AdamW betas (with the warm-up lr)
    # z-score the 57 face coefficients with train-split statistics (before issue 26); the paper and the
    # authors' dataset feed raw Deep3DFace values. Validation MSE is in raw units either way (Table 3).
    normalize_face: bool = False


class TransformerTrainConfig(TrainStageConfig):
    # the start token's reference frame in training and validation: "neutral_clip" = a frame of a neutral
    # clip of the same actor and view (the paper's test condition); "window_frame" = a random frame of the
    # target window (the authors' ref_idx); "window_first_frame" = the window's first frame (before issue 26)
    reference: Literal["neutral_clip", "window_frame", "window_first_frame"] = "neutral_clip"


class LipTrainConfig(TrainStageConfig):
    window: int = Field(5, ge=1)  # the paper trains the lip branch on continuous 5 frames
    # beta's reference frame: "neutral_clip" = a neutral clip of the same actor and view (inference's
    # condition); "clip_frame" = a random frame of the window's own clip (before issue 26)
    reference: Literal["neutral_clip", "clip_frame"] = "neutral_clip"


class TrainConfig(_Strict):
    vqvae: VQVAETrainConfig = VQVAETrainConfig()
    transformer: TransformerTrainConfig = TransformerTrainConfig()
    lip: LipTrainConfig = LipTrainConfig()
    model_alias: str = "best"
    # CPU threads for training; float sums depend on it, so a resumed run must use the same count.
    # None: every core this process may use.
    cpu_threads: int | None = Field(None, ge=1)
    # training stages that may share one CUDA device at once (Prefect global concurrency limit "gpu")
    gpu_slots: int = Field(1, ge=1)


class EvalConfig(_Strict):
    # score at most this many test clips: the emotions take turns, each with its least-used level and the
    # least-used test actor (tasks/evaluation/subset.py); null: the whole test split
    max_clips: int | None = Field(None, ge=1)
    # "neutral": audio + the actor's neutral reference frame (Table 1); "driving": audio + emotional driving
    # frames from another sentence of the same actor, view, emotion and level (another level when the
    # actor has no such sentence), rendered and scored on all six metrics (Table 5, upper rows);
    # "driving_oracle": the clip's own ground-truth frames drive it (an oracle, not the paper's setting).
    # Metrics of the driving settings are logged as test/<setting>/<metric>
    settings: list[Literal["neutral", "driving", "driving_oracle"]] = Field(["neutral"], min_length=1)
    # test videos rendered elsewhere (<clip_id>.mp4): used instead of rendering
    rendered_dir: Path | None = None
    # render and compare only the first N frames of each test clip (quick runs). SyncNet's face track needs
    # at least 7 (its 13-frame zero-padded median filter); its +-15-frame offset search is meaningful from
    # 36 (evaluate warns below that)
    render_max_frames: int | None = Field(None, ge=7)
    log_videos: int = Field(3, ge=0)  # rendered test videos logged as MLflow artifacts
    syncnet_checkpoint: Path | None = None
    # EmoAcc's classifier: "esr9" (the paper's [32], Siqueira et al. AAAI 2020: the folder eval.esr9_dir of
    # its 10 released state dicts) or "huggingface" (a save_pretrained image classifier in
    # eval.emotion_classifier_checkpoint)
    emotion_classifier: Literal["esr9", "huggingface"] = "esr9"
    esr9_dir: Path | None = None
    # Table 1's other rows, scored on the same clips as ours (tasks/evaluation/methods.py registry):
    # real_video (ceiling), copy_reference and mean_motion (floors), sadtalker (SadTalker's released ExpNet +
    # PoseVAE: the paper's main comparison); others register themselves
    methods: list[str] = ["real_video", "copy_reference", "mean_motion", "sadtalker"]
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000)  # 95% percentile intervals over clips
    emotion_classifier_checkpoint: Path | None = None
    # render and score the clips as Dask tasks on the feature flows' cluster (dask.address, else a local
    # cluster of dask.n_workers), the models loaded once per worker, CUDA clips on workers with a GPU
    # resource; false: one after another in the evaluating process
    dask: bool = False
    # face-alignment's test-time flip averaging for evaluation's landmarks (real and rendered): off, as
    # face-alignment's own default and EAT's evaluation (evaluation_eat scripts/align_68.py) run it;
    # extraction keeps face.flip_input. Off halves FAN's time, which dominates evaluation on a CPU
    flip_input: bool = False
    # the precision evaluation's S3FD and FAN run in: float32 as face-alignment's default and the authors'
    # eval.py. bfloat16 halves both networks' time on a CPU with native BF16 (AVX512-BF16 or AMX; without
    # it, 2.5-5x slower), float16 is for GPUs; "auto": bfloat16 on a CPU with native BF16, else float32.
    # Anything but float32 is a protocol deviation (landmarks within ~3 digits) the protocol card records
    detector_dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"


class RendererWidthsConfig(_Strict):
    """Renderer channel widths; released sizes (SadTalker facerender.yaml) are what real checkpoints need."""

    kp_block_expansion: int = Field(32, ge=1)
    kp_max_features: int = Field(1024, ge=1)
    generator_block_expansion: int = Field(64, ge=1)
    generator_max_features: int = Field(512, ge=1)  # / reshape_depth = appearance volume channels (32)
    dense_block_expansion: int = Field(32, ge=1)
    dense_max_features: int = Field(1024, ge=1)
    dense_compress: int = Field(4, ge=1)
    mapping_descriptor: int = Field(1024, ge=1)
    spade_hidden: int = Field(128, ge=1)
    num_kp: int = Field(15, ge=1)
    reshape_depth: int = Field(16, ge=1)


class RenderConfig(_Strict):
    """SadTalker's face renderer: released checkpoints (see README), source crop size, render settings."""

    # SadTalker_V0.0.2_256.safetensors (or _512), or the older facevid2vid_00189-model.pth.tar
    checkpoint: Path = Path("assets/sadtalker/SadTalker_V0.0.2_256.safetensors")
    mapping_checkpoint: Path = Path("assets/sadtalker/mapping_00229-model.pth.tar")  # crop / still: 70
    mapping_full_checkpoint: Path = Path("assets/sadtalker/mapping_00109-model.pth.tar")  # full: 73
    mode: Literal["crop", "full", "still"] = "crop"  # default for generate (--mode overrides)
    image_size: int = Field(256, ge=128, multiple_of=32)  # source crop side: 256 or 512 for the releases
    batch_size: int = Field(4, ge=1)  # frames per renderer call
    # precision of the image-space layers (SPADE decoder; the warp stays float32). auto: float16 on CUDA,
    # float32 on CPU; bfloat16 is about 2x faster on CPUs with AVX512-BF16/AMX (README: benchmark)
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    widths: RendererWidthsConfig = RendererWidthsConfig()


class SadTalkerConfig(_Strict):
    """SadTalker as a method (Table 1 / Table 2 row 1, ``generate --method sadtalker``): its released ExpNet
    and PoseVAE. Unset checkpoints come from ``render.checkpoint`` (SadTalker_V0.0.2_*.safetensors holds
    ``audio2exp.`` and ``audio2pose.``)."""

    audio2exp_checkpoint: Path | None = None  # the older auido2exp_00300-model.pth
    audio2pose_checkpoint: Path | None = None  # the older auido2pose_00140-model.pth
    pose_style: int = Field(0, ge=0, le=45)  # upstream --pose_style: one of PoseVAE's 46 style ids
    seed: int = Field(0, ge=0, lt=2**32)  # seeds the blink ratio (Python random) and PoseVAE's z (torch)


class GenerationConfig(_Strict):
    """Inference settings of ``generate`` and ``evaluate`` (no training fingerprint includes them)."""

    # sliding decoder context in tokens: decoding past it forgets the oldest tokens, so time and memory stay
    # linear in length (null: the whole sequence, quadratic)
    max_context: int | None = Field(64, ge=1)


class AblationConfig(_Strict):
    """What the ``ablate`` flow trains: the rows of the paper's Tables 2-4 (tasks/evaluation/ablation.py)."""

    tables: list[Literal[2, 3, 4]] = Field([2, 3, 4], min_length=1)
    # Table 3's three codebook sizes (the paper's 512/1024/2048; demo.yaml scales them to its tiny model)
    codebook_sizes: list[int] = Field([512, 1024, 2048], min_length=3, max_length=3)
    # test clips each evaluated row renders and scores (null: eval.max_clips); rows share one stage 1 and
    # reuse trained stages, so on a small machine evaluation is most of an ablation's time
    eval_max_clips: int | None = Field(None, ge=1)

    @field_validator("codebook_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(k < 2 for k in v):
            raise ValueError(f"codebook sizes must be >= 2, got {v}")
        return v


class PipelineConfig(_Strict):
    """Root configuration for every flow."""

    name: str = "emotalker"
    seed: int = Field(0, ge=0, lt=2**32)  # numpy seeds are 32-bit
    device: Literal["auto", "cpu", "cuda"] = "auto"
    paths: PathsConfig = PathsConfig()
    download: DownloadConfig = DownloadConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    data: DataConfig = DataConfig()
    face: FaceFeatureConfig = FaceFeatureConfig()
    audio: AudioFeatureConfig = AudioFeatureConfig()
    dask: DaskConfig = DaskConfig()
    mlflow: MlflowConfig = MlflowConfig()
    vqvae: VQVAEConfig = VQVAEConfig()
    transformer: TransformerConfig = TransformerConfig()
    lip: LipConfig = LipConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    render: RenderConfig = RenderConfig()
    generation: GenerationConfig = GenerationConfig()
    sadtalker: SadTalkerConfig = SadTalkerConfig()
    ablation: AblationConfig = AblationConfig()

    @model_validator(mode="after")
    def _no_credentials(self) -> PipelineConfig:
        """A config is a flow parameter, a log line and MLflow params: it may not carry credentials."""
        keys = [
            k for k, v in _leaves(self.model_dump(mode="json")) if isinstance(v, str) and holds_credentials(v)
        ]
        if keys:
            raise ValueError(f"{', '.join(keys)} holds credentials; {CREDENTIALS_HELP}")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        """Rules across keys, checked at load so a run never starts on a config that cannot work."""
        t, v = self.transformer, self.vqvae
        if t.d_model % t.n_heads:
            raise ValueError(
                f"transformer.d_model ({t.d_model}) must be divisible by transformer.n_heads ({t.n_heads})"
            )
        frames_per_token = v.stride_t**v.down_t  # l
        window = self.train.transformer.window
        if window % frames_per_token:
            raise ValueError(
                f"train.transformer.window ({window}) must be a multiple of the tokens' length "
                f"l = vqvae.stride_t ** vqvae.down_t = {frames_per_token}"
            )
        if self.audio.kmeans_sample_frames < self.audio.kmeans_k:
            raise ValueError(
                f"audio.kmeans_sample_frames ({self.audio.kmeans_sample_frames}) must be at least "
                f"audio.kmeans_k ({self.audio.kmeans_k})"
            )
        return self

    def torch_device(self) -> str:
        """Resolve ``auto`` to cuda when a GPU is visible."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of some config sections: reruns compare it to decide what is stale."""
        payload = {s: _dump(getattr(self, s)) for s in sections} if sections else _dump(self)
        return digest(payload)


def _leaves(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every scalar in nested mappings and lists (``a.b[0].c``)."""
    if isinstance(d, dict):
        return [leaf for k, v in d.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(d, list | tuple):
        return [leaf for i, v in enumerate(d) for leaf in _leaves(v, f"{prefix}[{i}]")]
    return [(prefix, d)]


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the file and key."""


# what a config may expand to: a YAML "billion laughs" (aliases of aliases) is a few hundred bytes that
# validation, logging and MLflow would expand into gigabytes
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # scalars, lists and mappings, counted with every alias expanded
MAX_CONFIG_DEPTH = 32


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses documents expanding past the limits above, before building them."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, {}, set(), 0)
        return self.construct_document(node)


def _expanded_nodes(node: yaml.Node, memo: dict[int, int], active: set[int], depth: int) -> int:
    """Nodes ``node`` stands for once aliases are expanded (each alias counted in full, as it would be)."""
    if depth > MAX_CONFIG_DEPTH:
        raise _ConfigLimit(f"nests deeper than {MAX_CONFIG_DEPTH} levels")
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _ConfigLimit("has an alias that refers to itself")
    active.add(key)
    n = 1
    if isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_nodes(c, memo, active, depth + 1) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n += sum(_expanded_nodes(c, memo, active, depth + 1) for kv in node.value for c in kv)
    active.discard(key)
    if n > MAX_CONFIG_NODES:
        raise _ConfigLimit(f"expands to more than {MAX_CONFIG_NODES} values (aliases counted in full)")
    memo[key] = n
    return n


class _ConfigLimit(ValueError):
    """A YAML document past what a config may be (size, expansion, depth)."""


def _safe_load(text: str) -> Any:
    if len(text) > MAX_CONFIG_BYTES:
        raise _ConfigLimit(f"is larger than {MAX_CONFIG_BYTES} bytes")
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def _parse_value(raw: str, item: str) -> Any:
    try:
        return _safe_load(raw)
    except _ConfigLimit as exc:
        raise ConfigError(f"override {redact_secrets(item).split('=', 1)[0]!r}: value {exc}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            f"override {redact_secrets(item)!r}: value is not valid YAML ({problem}); "
            "quote it (--set 'key=\"text\"') or close its brackets"
        ) from exc


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {redact_secrets(item)!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {redact_secrets(item)!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(raw, item)
    return data


SHIPPED_CONFIGS = Path(__file__).resolve().parent


def shipped_configs() -> dict[str, Path]:
    """The YAML files installed with the package, by name (``paper``, ``demo``)."""
    return {p.stem: p for p in sorted(SHIPPED_CONFIGS.glob("*.yaml"))}


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or a shipped config's name (``paper``, ``demo``, ``configs/demo.yaml``).

    An existing file always wins; otherwise a name (or the in-checkout path ``configs/<name>.yaml``)
    resolves to the copy installed with the package, so commands work outside a checkout.
    """
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    name = p.stem if (p.suffix in {".yaml", ".yml"} and p.parent.as_posix() in {".", "configs"}) else str(p)
    if name in shipped:
        return shipped[name]
    raise ConfigError(f"config file not found: {p} (shipped configs: {', '.join(shipped)})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML config (or the defaults), apply overrides, validate; errors name the file."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        p = resolve_config_path(path)
        where = str(p)
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: refused: the document is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            loaded = _safe_load(p.read_bytes().decode("utf-8")) or {}
        except _ConfigLimit as exc:
            raise ConfigError(f"{p}: refused: the document {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                "save the file as UTF-8"
            ) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {' '.join(str(exc).split())}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, overrides or [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        # our own one-line rendering: pydantic's would echo the input value (a URL with credentials)
        problems = "; ".join(
            ": ".join(
                p for p in (".".join(str(x) for x in e["loc"]), e["msg"].removeprefix("Value error, ")) if p
            )
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise ConfigError(f"{where}: invalid config: {problems}") from None


def dump_config(cfg: PipelineConfig, path: str | Path) -> Path:
    """Write the fully-resolved config (what a run really used) as YAML."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return p
