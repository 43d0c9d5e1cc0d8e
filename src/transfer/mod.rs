//! Transfer learning from ImageNet (the walkthrough's part IV): frozen VGG-16 and ResNet-50
//! backbones, their weights, features cached on disk, and heads trained on them.

pub mod features;
pub mod weights;

pub use features::{
    cached_features, ExtractionRecord, FeatureSettings, FeatureStage, Features, Preprocessing,
};
pub use weights::{Architecture, LoadedBackbone};
