/// Kinema's release version, printed by `kinema --version`.
public let kinemaVersion = "0.1.0"
