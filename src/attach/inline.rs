//! Inline binary attachments become managed ones (`attachments.convert_inline`).
//!
//! Clients that cannot upload managed attachments put the file into the event itself:
//! `ATTACH;ENCODING=BASE64;VALUE=BINARY:` and the whole file, a third larger, sent again
//! with every sync. On a PUT of a calendar object the guard hands each such value to
//! [`convert`], which stores it as an attachment-add by the caller would (RFC 8607 §3.4:
//! same size and count limits, the caller as creator, the object as its home) and
//! replaces the line by a managed `ATTACH` (`MANAGED-ID`, `FMTTYPE`, `FILENAME`, `SIZE`,
//! the attachment URI) in the same component. Every other byte stays as it was.
//!
//! Nothing is half-converted: every value is decoded and checked against the limits
//! before the first is stored; a store failure deletes what was stored. Attendees'
//! copies are left as sent (attendees may not add managed attachments, RFC 8607
//! §3.12.2, and refusing their reply would be worse), as are bodies too large to edit.

use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use bytes::Bytes;

use super::params;
use crate::error::{Error, Precondition};
use crate::ical::{edit, Calendar, NewAttach};
use crate::state::State;
use crate::store::{AttachmentId, Meta, PutBlobError};

/// Base64 as clients write it: padding or not.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The converted object and the attachments stored for it (state pending; the caller
/// indexes them, and deletes them with [`discard`] when the upstream refuses the
/// object). `None`: nothing to convert.
pub async fn convert(
    state: &State,
    creator: &str,
    cal: &Calendar,
    path: &str,
) -> Result<Option<(Vec<u8>, Vec<Meta>)>, Error> {
    let inline = cal.inline_attaches();
    if inline.is_empty() {
        return Ok(None);
    }
    let cfg = &state.config.attachments;
    let count = cal.distinct_managed_ids().len() + inline.len();
    if count as u64 > cfg.max_attachments_per_resource {
        return Err(Error::Precondition(
            Precondition::MaxAttachmentsPerResource,
            format!(
                "{path}: {count} managed attachments after converting the inline ones (max {})",
                cfg.max_attachments_per_resource
            ),
        ));
    }
    // Decode and check all before storing any.
    let mut decoded = Vec::with_capacity(inline.len());
    for a in &inline {
        let text: String = a
            .value
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let data = LENIENT
            .decode(text.as_bytes())
            .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(text.as_bytes()))
            .map_err(|e| {
                Error::BadRequest(format!("{path}: an inline ATTACH is not base64: {e}"))
            })?;
        if data.len() as u64 > cfg.max_attachment_size {
            return Err(Error::Precondition(
                Precondition::MaxAttachmentSize,
                format!(
                    "{path}: an inline ATTACH of {} bytes exceeds {}",
                    data.len(),
                    cfg.max_attachment_size
                ),
            ));
        }
        decoded.push(data);
    }
    let uid = cal.uid().unwrap_or_default();
    let mut stored: Vec<Meta> = Vec::new();
    let mut lines = Vec::new();
    for (a, data) in inline.iter().zip(decoded) {
        let media_type = params::media_type_of(a.fmttype.as_deref());
        let filename = match a.filename.as_deref() {
            Some(f) => crate::rfc6266::sanitize_filename(f),
            None => derived_name(&media_type),
        };
        match store_one(state, creator, path, &uid, &filename, &media_type, data).await {
            Ok(meta) => {
                lines.push((
                    a.line,
                    NewAttach {
                        managed_id: meta.id.as_str().to_owned(),
                        fmttype: meta.media_type.clone(),
                        filename: meta.filename.clone(),
                        size: meta.size,
                        uri: super::attachment_url(
                            &state.upstream,
                            &cfg.prefix,
                            &meta.id,
                            &meta.filename,
                        ),
                    },
                ));
                stored.push(meta);
            }
            Err(e) => {
                discard(state, &stored).await;
                return Err(e);
            }
        }
    }
    match edit::replace_inline(cal, &lines) {
        Ok(bytes) => {
            tracing::info!(%path, converted = stored.len(), "inline attachments stored (pending)");
            Ok(Some((bytes, stored)))
        }
        Err(e) => {
            discard(state, &stored).await;
            Err(Error::Internal(format!(
                "{path}: replacing inline attachments: {e}"
            )))
        }
    }
}

async fn store_one(
    state: &State,
    creator: &str,
    path: &str,
    uid: &str,
    filename: &str,
    media_type: &str,
    data: Vec<u8>,
) -> Result<Meta, Error> {
    let id = AttachmentId::new();
    let max = state.config.attachments.max_attachment_size;
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(data)) });
    let info = match state.store.put_blob(&id, body, max).await {
        Ok(info) => info,
        Err(PutBlobError::Store(e)) => return Err(Error::from(e)),
        Err(e @ PutBlobError::Busy { .. }) => return Err(Error::Busy(e.to_string())),
        Err(e) => return Err(Error::Internal(e.to_string())),
    };
    let meta = Meta {
        id: id.clone(),
        creator: creator.to_owned(),
        href: path.to_owned(),
        uid: uid.to_owned(),
        filename: filename.to_owned(),
        media_type: media_type.to_owned(),
        size: info.size,
        sha256: info.sha256,
        created: chrono::Utc::now(),
    };
    if let Err(e) = state.store.put_meta(&meta).await {
        let _ = state.store.discard(&id).await;
        return Err(Error::from(e));
    }
    Ok(meta)
}

/// Deletes attachments stored for an object the upstream did not take.
pub async fn discard(state: &State, stored: &[Meta]) {
    for m in stored {
        if let Err(e) = state.store.discard(&m.id).await {
            tracing::warn!(id = %m.id.as_str(), error = %e, "discarding converted attachment failed; gc will");
        }
    }
}

/// A name for a value that came without one: `attachment` and the usual extension of
/// its media type.
fn derived_name(media_type: &str) -> String {
    let ext = match media_type {
        "application/pdf" => ".pdf",
        "image/png" => ".png",
        "image/jpeg" => ".jpg",
        "image/gif" => ".gif",
        "text/plain" => ".txt",
        "text/html" => ".html",
        "text/calendar" => ".ics",
        "application/zip" => ".zip",
        "application/msword" => ".doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => ".docx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => ".xlsx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => ".pptx",
        _ => ".bin",
    };
    format!("{}{ext}", crate::rfc6266::DEFAULT_FILENAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_derived_from_the_media_type() {
        assert_eq!(derived_name("application/pdf"), "attachment.pdf");
        assert_eq!(derived_name("application/x-unknown"), "attachment.bin");
    }

    #[test]
    fn base64_is_read_with_or_without_padding() {
        assert_eq!(LENIENT.decode("aGk=").unwrap(), b"hi");
        assert_eq!(LENIENT.decode("aGk").unwrap(), b"hi");
    }
}
