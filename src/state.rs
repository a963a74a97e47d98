//! The shared per-process context every route and job works with (DESIGN §9): the
//! validated configuration, the upstream client, the store, the identity cache and the
//! upload slots. Below the routes, above what it holds; nothing here knows a route.

use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::identity::IdentityCache;
use crate::slots::UploadSlots;
use crate::store::Store;
use crate::upstream::Upstream;

/// Everything a request handler needs; shared by all connections.
pub struct State {
    pub config: Config,
    pub upstream: Upstream,
    pub store: Store,
    pub identity: Arc<IdentityCache>,
    /// One slot per attachment upload in progress (`attachments.max_concurrent_uploads`,
    /// shared out per user).
    pub uploads: Arc<UploadSlots>,
}

impl State {
    pub fn new(config: Config) -> Result<State, Error> {
        let upstream = Upstream::new(&config.upstream, &config.server)?;
        let store = Store::from_url(&config.storage.url, &config.storage.options).map_err(|e| {
            Error::Config(format!(
                "storage.url = {:?}: {e}",
                config.storage.url.as_str()
            ))
        })?;
        let store =
            store.with_upload_buffer(config.storage.part_size, config.storage.upload_buffer);
        let identity = Arc::new(IdentityCache::new(config.identity.clone()));
        let uploads = Arc::new(UploadSlots::new(
            config.attachments.max_concurrent_uploads,
            config.attachments.max_concurrent_uploads_per_user,
        ));
        Ok(State {
            config,
            upstream,
            store,
            identity,
            uploads,
        })
    }

    /// The state one worker thread uses: everything shared, but its own upstream client,
    /// so the pooled upstream connections of a request live on the request's thread.
    pub fn for_worker(&self) -> Result<State, Error> {
        Ok(State {
            config: self.config.clone(),
            upstream: self.upstream.for_worker(),
            store: self.store.clone(),
            identity: self.identity.clone(),
            uploads: self.uploads.clone(),
        })
    }
}
