-- Videos (owned by services/files/video): one row per file that is a video, with the probed
-- metadata and the state of each processing step; thumbnails in their own table.
CREATE TABLE files.videos (
    file_id             text PRIMARY KEY REFERENCES files.files (id) ON DELETE CASCADE,
    -- Probe step (video.probe job) and its result.
    probe_state         text NOT NULL DEFAULT 'pending'
                        CHECK (probe_state IN ('pending', 'succeeded', 'failed')),
    probe_job           text,
    probe_error         text,
    probe_update_time   timestamptz NOT NULL DEFAULT now(),
    duration_seconds    double precision CHECK (duration_seconds >= 0),
    container           text,
    video_codec         text,
    audio_codec         text,
    width               integer CHECK (width >= 0),
    height              integer CHECK (height >= 0),
    frame_rate          double precision CHECK (frame_rate >= 0),
    bit_rate            bigint CHECK (bit_rate >= 0),
    rotation_degrees    integer CHECK (rotation_degrees >= 0 AND rotation_degrees < 360),
    -- Thumbnail step (video.thumbnail job).
    thumbnail_state     text NOT NULL DEFAULT 'pending'
                        CHECK (thumbnail_state IN ('pending', 'succeeded', 'failed')),
    thumbnail_job       text,
    thumbnail_error     text,
    thumbnail_update_time timestamptz NOT NULL DEFAULT now(),
    create_time         timestamptz NOT NULL DEFAULT now(),
    update_time         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX videos_create_idx ON files.videos (create_time DESC, file_id DESC);

CREATE TABLE files.video_thumbnails (
    file_id         text NOT NULL REFERENCES files.videos (file_id) ON DELETE CASCADE,
    index           integer NOT NULL CHECK (index >= 0),
    time_seconds    double precision NOT NULL CHECK (time_seconds >= 0),
    bucket          text NOT NULL,
    object_key      text NOT NULL,
    version_id      text,
    width           integer NOT NULL CHECK (width > 0),
    height          integer NOT NULL CHECK (height > 0),
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    create_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (file_id, index)
);
