//! User roles, invitation types and the hierarchy that decides who may
//! invite whom.
//!
//! The sales chain is admin → CHP admin → master distributor → distributor →
//! sales → doctor: each level invites the next one. A doctor invites their
//! practice (office admin, medical staff). An organisation admin also invites
//! admins and the service partners (IVR company, shipping logistics). Any
//! other pair is refused.

use serde::{Deserialize, Serialize};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Administers the organisation (the platform organisation's admins
    /// administer every organisation).
    Admin,
    /// A prescriber.
    Doctor,
    /// Laboratory staff.
    LabTech,
    /// Pharmacy staff.
    Pharmacist,
    /// Marketing staff.
    Marketer,
    /// Support staff.
    Support,
    /// A sales representative.
    Sales,
    /// A distributor.
    Distributor,
    /// A master distributor.
    MasterDistributor,
    /// A practice's office administrator.
    OfficeAdmin,
    /// A practice's medical staff.
    MedicalStaff,
    /// An IVR company.
    IvrCompany,
    /// A shipping logistics partner.
    ShippingLogistics,
    /// A community health programme administrator.
    ChpAdmin,
}

impl Role {
    /// Every role.
    pub const ALL: &'static [Role] = &[
        Role::Admin,
        Role::Doctor,
        Role::LabTech,
        Role::Pharmacist,
        Role::Marketer,
        Role::Support,
        Role::Sales,
        Role::Distributor,
        Role::MasterDistributor,
        Role::OfficeAdmin,
        Role::MedicalStaff,
        Role::IvrCompany,
        Role::ShippingLogistics,
        Role::ChpAdmin,
    ];

    /// The role's name, as stored and as put in JWTs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Doctor => "DOCTOR",
            Role::LabTech => "LAB_TECH",
            Role::Pharmacist => "PHARMACIST",
            Role::Marketer => "MARKETER",
            Role::Support => "SUPPORT",
            Role::Sales => "SALES",
            Role::Distributor => "DISTRIBUTOR",
            Role::MasterDistributor => "MASTER_DISTRIBUTOR",
            Role::OfficeAdmin => "OFFICE_ADMIN",
            Role::MedicalStaff => "MEDICAL_STAFF",
            Role::IvrCompany => "IVR_COMPANY",
            Role::ShippingLogistics => "SHIPPING_LOGISTICS",
            Role::ChpAdmin => "CHP_ADMIN",
        }
    }

    /// Parses a role name (case-insensitive).
    pub fn parse(raw: &str) -> Option<Self> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str().eq_ignore_ascii_case(raw))
    }

    /// The invitation types someone with this role may send.
    pub fn may_invite(self) -> &'static [InvitationType] {
        use InvitationType as T;
        match self {
            Role::Admin => &[T::Admin, T::ChpAdmin, T::IvrCompany, T::ShippingLogistics],
            Role::ChpAdmin => &[T::MasterDistributor],
            Role::MasterDistributor => &[T::Distributor],
            Role::Distributor => &[T::Sales],
            Role::Sales => &[T::Doctor],
            Role::Doctor => &[T::OfficeAdmin, T::MedicalStaff],
            _ => &[],
        }
    }
}

/// What someone is invited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationType {
    /// A doctor.
    Doctor,
    /// A sales representative.
    Sales,
    /// A distributor.
    Distributor,
    /// A master distributor.
    MasterDistributor,
    /// A practice's office administrator.
    OfficeAdmin,
    /// A practice's medical staff.
    MedicalStaff,
    /// An IVR company.
    IvrCompany,
    /// A shipping logistics partner.
    ShippingLogistics,
    /// An organisation admin.
    Admin,
    /// A community health programme administrator.
    ChpAdmin,
}

impl InvitationType {
    /// Every type.
    pub const ALL: &'static [InvitationType] = &[
        InvitationType::Doctor,
        InvitationType::Sales,
        InvitationType::Distributor,
        InvitationType::MasterDistributor,
        InvitationType::OfficeAdmin,
        InvitationType::MedicalStaff,
        InvitationType::IvrCompany,
        InvitationType::ShippingLogistics,
        InvitationType::Admin,
        InvitationType::ChpAdmin,
    ];

    /// The type's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationType::Doctor => "doctor",
            InvitationType::Sales => "sales",
            InvitationType::Distributor => "distributor",
            InvitationType::MasterDistributor => "master_distributor",
            InvitationType::OfficeAdmin => "office_admin",
            InvitationType::MedicalStaff => "medical_staff",
            InvitationType::IvrCompany => "ivr_company",
            InvitationType::ShippingLogistics => "shipping_logistics",
            InvitationType::Admin => "admin",
            InvitationType::ChpAdmin => "chp_admin",
        }
    }

    /// Parses a type name.
    pub fn parse(raw: &str) -> Option<Self> {
        InvitationType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == raw)
    }

    /// The role the invited user gets.
    pub fn role(self) -> Role {
        match self {
            InvitationType::Doctor => Role::Doctor,
            InvitationType::Sales => Role::Sales,
            InvitationType::Distributor => Role::Distributor,
            InvitationType::MasterDistributor => Role::MasterDistributor,
            InvitationType::OfficeAdmin => Role::OfficeAdmin,
            InvitationType::MedicalStaff => Role::MedicalStaff,
            InvitationType::IvrCompany => Role::IvrCompany,
            InvitationType::ShippingLogistics => Role::ShippingLogistics,
            InvitationType::Admin => Role::Admin,
            InvitationType::ChpAdmin => Role::ChpAdmin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sales_chain_invites_one_level_down_and_nothing_else() {
        use InvitationType as T;
        let chain = [
            (Role::Admin, T::ChpAdmin),
            (Role::ChpAdmin, T::MasterDistributor),
            (Role::MasterDistributor, T::Distributor),
            (Role::Distributor, T::Sales),
            (Role::Sales, T::Doctor),
            (Role::Doctor, T::OfficeAdmin),
            (Role::Doctor, T::MedicalStaff),
        ];
        for (role, ty) in chain {
            assert!(role.may_invite().contains(&ty), "{role:?} invites {ty:?}");
        }
        assert!(!Role::Sales.may_invite().contains(&T::Distributor));
        assert!(!Role::Doctor.may_invite().contains(&T::Doctor));
        assert!(!Role::Distributor.may_invite().contains(&T::Doctor));
        assert!(Role::OfficeAdmin.may_invite().is_empty());
        for ty in InvitationType::ALL {
            assert_eq!(InvitationType::parse(ty.as_str()), Some(*ty));
            assert_eq!(Role::parse(ty.role().as_str()), Some(ty.role()));
        }
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("WIZARD"), None);
    }
}
